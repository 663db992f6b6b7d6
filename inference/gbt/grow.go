package gbt

import (
	"math"
	"sync"
)

// histBin sums the gradient, hessian and row count of the rows in one bin.
type histBin struct {
	g, h float64
	n    int32
}

// split is a candidate split of a node.
type split struct {
	ok          bool
	feature     int
	bin         int // left: value bins 0..bin; bin == nValueBins-1 splits "present vs missing"
	missingLeft bool
	gain        float64
	gl, hl      float64
	nl          int
}

func (t *trainer) getHist() []histBin {
	if n := len(t.pool); n > 0 {
		h := t.pool[n-1]
		t.pool = t.pool[:n-1]
		return h
	}
	return make([]histBin, t.offs[len(t.offs)-1])
}

func (t *trainer) putHist(h []histBin) { t.pool = append(t.pool, h) }

// buildHist fills h for the tree's features from rows. Features are shared
// out among Workers goroutines; each feature's sums are computed by one
// goroutine in row order, so the result does not depend on Workers.
func (t *trainer) buildHist(rows []int32, h []histBin) {
	nf := t.data.nf
	all := len(t.feats) == nf
	work := func(lo, hi int) {
		feats := t.feats[lo:hi]
		for _, f := range feats {
			clear(h[t.offs[f]:t.offs[f+1]])
		}
		if all {
			offs := t.offs[lo:hi]
			for _, r := range rows {
				gp := t.grad[r]
				rb := t.data.rows[int(r)*nf+lo : int(r)*nf+hi]
				for k, b := range rb {
					e := &h[offs[k]+int(b)]
					e.g += gp.g
					e.h += gp.h
					e.n++
				}
			}
			return
		}
		for _, f := range feats {
			hf := h[t.offs[f]:t.offs[f+1]]
			col := t.data.cols[f]
			for _, r := range rows {
				b := &hf[col[r]]
				gp := t.grad[r]
				b.g += gp.g
				b.h += gp.h
				b.n++
			}
		}
	}
	w := t.p.Workers
	if w <= 1 || len(rows)*len(t.feats) < 1<<17 {
		work(0, len(t.feats))
		return
	}
	var wg sync.WaitGroup
	chunk := (len(t.feats) + w - 1) / w
	for lo := 0; lo < len(t.feats); lo += chunk {
		hi := min(lo+chunk, len(t.feats))
		wg.Go(func() { work(lo, hi) })
	}
	wg.Wait()
}

// subtractHist turns parent into parent - child, for the tree's features.
func (t *trainer) subtractHist(parent, child []histBin) {
	for _, f := range t.feats {
		for i := t.offs[f]; i < t.offs[f+1]; i++ {
			parent[i].g -= child[i].g
			parent[i].h -= child[i].h
			parent[i].n -= child[i].n
		}
	}
}

// bestSplit scans every feature's histogram for the split with the highest
// gain, trying missing values on each side.
func (t *trainer) bestSplit(h []histBin, g, hs float64, n int) split {
	lambda := t.p.Lambda
	parent := g * g / (hs + lambda)
	best := split{gain: t.p.Gamma}
	minRows, minHess := t.p.MinLeafRows, t.p.MinLeafHessian
	for _, f := range t.feats {
		hf := h[t.offs[f]:t.offs[f+1]]
		nb := len(hf) - 1
		miss := hf[nb]
		var gl, hl float64
		var nl int
		for b := range nb {
			gl += hf[b].g
			hl += hf[b].h
			nl += int(hf[b].n)
			for _, ml := range [2]bool{false, true} {
				if ml && miss.n == 0 {
					continue // same split as without; direction decided below
				}
				cgl, chl, cnl := gl, hl, nl
				if ml {
					cgl, chl, cnl = gl+miss.g, hl+miss.h, nl+int(miss.n)
				}
				cgr, chr, cnr := g-cgl, hs-chl, n-cnl
				if cnl < minRows || cnr < minRows || chl < minHess || chr < minHess {
					continue
				}
				gain := cgl*cgl/(chl+lambda) + cgr*cgr/(chr+lambda) - parent
				if gain > best.gain {
					best = split{ok: true, feature: f, bin: b, missingLeft: ml, gain: gain, gl: cgl, hl: chl, nl: cnl}
				}
			}
		}
	}
	if best.ok && h[t.offs[best.feature+1]-1].n == 0 {
		// No training row of this node lacked the feature: send future
		// missing values where most rows went.
		best.missingLeft = best.nl >= n-best.nl
	}
	return best
}

// growTree builds one tree on the sampled rows.
func (t *trainer) growTree(rows []int32) Tree {
	var g, hs float64
	for _, r := range rows {
		g += t.grad[r].g
		hs += t.grad[r].h
	}
	h := t.getHist()
	t.buildHist(rows, h)
	var tree Tree
	t.grow(&tree, rows, h, 0, g, hs)
	return tree
}

// grow adds the node for rows (whose histogram is h, owned by this call) and
// its subtree, and returns the node's index.
func (t *trainer) grow(tree *Tree, rows []int32, h []histBin, depth int, g, hs float64) int32 {
	idx := int32(len(tree.Nodes))
	tree.Nodes = append(tree.Nodes, Node{Feature: -1})
	var s split
	if depth < t.p.MaxDepth && len(rows) >= 2*t.p.MinLeafRows {
		s = t.bestSplit(h, g, hs, len(rows))
	}
	if !s.ok {
		t.putHist(h)
		tree.Nodes[idx].Value = float32(-g / (hs + t.p.Lambda) * t.p.LearningRate)
		return idx
	}
	left, right := t.partition(rows, s)
	// Build the smaller child's histogram; the larger one is the parent's
	// minus it, computed in place in the parent's buffer.
	swap := len(right) < len(left)
	small := left
	if swap {
		small = right
	}
	hSmall := t.getHist()
	t.buildHist(small, hSmall)
	t.subtractHist(h, hSmall)
	hLeft, hRight := hSmall, h
	if swap {
		hLeft, hRight = h, hSmall
	}
	cuts := t.data.cuts[s.feature]
	thr := float32(math.Inf(1)) // "any present value" vs missing
	if s.bin < len(cuts) {
		thr = cuts[s.bin]
	}
	tree.Nodes[idx] = Node{Feature: int32(s.feature), Threshold: thr, MissingLeft: s.missingLeft, bin: uint8(s.bin)}
	l := t.grow(tree, left, hLeft, depth+1, s.gl, s.hl)
	r := t.grow(tree, right, hRight, depth+1, g-s.gl, hs-s.hl)
	tree.Nodes[idx].Left, tree.Nodes[idx].Right = l, r
	return idx
}

// partition splits rows stably (each side keeps row order, which keeps the
// histogram passes reading memory forwards) and returns the two sides as
// sub-slices of rows.
func (t *trainer) partition(rows []int32, s split) (left, right []int32) {
	col := t.data.cols[s.feature]
	missBin := uint8(t.data.nValueBins(s.feature))
	bin := uint8(s.bin)
	nl, nr := 0, 0
	tmp := t.tmp[:len(rows)]
	for _, r := range rows {
		b := col[r]
		if b <= bin || (b == missBin && s.missingLeft) {
			rows[nl] = r
			nl++
		} else {
			tmp[nr] = r
			nr++
		}
	}
	copy(rows[nl:], tmp[:nr])
	return rows[:nl], rows[nl:]
}
