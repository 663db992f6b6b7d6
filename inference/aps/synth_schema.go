package aps

import "sync"

// This file fixes the SYNTHETIC generator's per-column recipe. The recipe is
// drawn once from a constant seed, so every data seed (train, test, any
// other) shares one "fleet": the same columns are informative, mostly
// missing or heavy-tailed whatever seed asks for rows.

type colKind uint8

const (
	kindCounter colKind = iota // non-negative integer counter, log-normal
	kindDecimal                // like a counter, written with two decimals
	kindBin                    // one bin of a 10-bin histogram
	kindConst                  // a constant (cd_000 is constant in the real set)
	kindCopy                   // a near-copy of an earlier column
)

// Missing groups: columns of one group go missing together, nested by rate,
// as blocks of sensors a truck does or does not report.
const (
	groupNone = iota
	groupSparse
	groupPartial
	groupOccasional
	numGroups
)

type colSpec struct {
	kind colKind
	// log-scale recipe: z = loc + usage·u + other·v + signal·s + noise·ε
	loc, usage, other, signal, noise float64
	zero                             float64 // probability of an exact 0
	missing                          float64 // missing rate (within the group when group != groupNone)
	group                            int
	posKeep                          float64 // for grouped columns: positives go missing at missing·posKeep
	sentinel                         float64 // rate of the 0x7F000000 "overflow" value
	hist                             int     // histogram index for kindBin
	bin                              int     // bin number for kindBin
	src                              int     // source column for kindCopy
	scale                            float64 // kindCopy: value = src·scale·(1 ± small noise)
	constant                         float64 // kindConst
}

type histSpec struct {
	loc, usage, noise float64 // log of the histogram total
	center, width     float64 // bell-shaped profile over the 10 bins
	shift             float64 // centre moves by shift·s (the failure signal)
	other             float64 // centre moves by other·v (nuisance)
	missing           float64
}

// sentinelValue mimics the real set's huge overflow-like counter values.
const sentinelValue = 0x7F000000 // 2130706432, exact in float32

type schema struct {
	cols  []colSpec
	hists []histSpec
}

var loadSchema = sync.OnceValue(buildSchema)

// informative lists the single columns that move with the failure latent s,
// with their loading in log units per unit of s.
var informative = map[string]float64{
	"aa_000": 0.55, "al_000": 0.45, "am_0": 0.45, "ap_000": 0.35, "aq_000": 0.35,
	"bb_000": 0.40, "bj_000": 0.50, "ci_000": 0.55, "ck_000": 0.35, "cc_000": 0.40,
	"dn_000": 0.35, "ds_000": 0.30, "bk_000": 0.45, "bq_000": 0.50, "cr_000": 0.45,
	"ah_000": 0.30, "an_000": 0.30, "ao_000": 0.30,
}

var missingGroups = map[string]struct {
	group int
	rate  float64
}{
	"br_000": {groupSparse, 0.82}, "bq_000": {groupSparse, 0.81}, "bp_000": {groupSparse, 0.79},
	"bo_000": {groupSparse, 0.77}, "ab_000": {groupSparse, 0.77}, "cr_000": {groupSparse, 0.77},
	"bn_000": {groupSparse, 0.73}, "bm_000": {groupSparse, 0.66}, "bl_000": {groupSparse, 0.45},
	"bk_000": {groupSparse, 0.38},
	"ad_000": {groupPartial, 0.25}, "cf_000": {groupPartial, 0.25}, "cg_000": {groupPartial, 0.25},
	"ch_000": {groupPartial, 0.25}, "co_000": {groupPartial, 0.25}, "ct_000": {groupPartial, 0.23},
	"cu_000": {groupPartial, 0.23}, "cv_000": {groupPartial, 0.23}, "cx_000": {groupPartial, 0.23},
	"cy_000": {groupPartial, 0.23}, "cz_000": {groupPartial, 0.23}, "da_000": {groupPartial, 0.23},
	"db_000": {groupPartial, 0.23}, "dc_000": {groupPartial, 0.23},
	"ec_00": {groupOccasional, 0.17}, "cm_000": {groupOccasional, 0.17},
	"cl_000": {groupOccasional, 0.16}, "ed_000": {groupOccasional, 0.16},
}

// copies are near-duplicates of an earlier column (the real set has several
// almost perfectly correlated counters).
var copies = map[string]struct {
	src   string
	scale float64
}{
	"bu_000": {"bb_000", 1}, "bv_000": {"bb_000", 1}, "cq_000": {"bb_000", 1},
	"bt_000": {"aa_000", 0.001},
}

// histShift is the failure signal carried by each histogram's shape.
var histShift = map[string]float64{"ag": 0.45, "ay": 0.35, "cn": -0.40, "cs": 0.30, "ee": 0.20}

func buildSchema() *schema {
	r := newRNG(0xA95, 0x5CA41A) // fixed: the recipe never depends on the data seed
	sc := &schema{}
	histIndex := map[string]int{}
	for _, g := range HistogramGroups {
		histIndex[g] = len(sc.hists)
		sc.hists = append(sc.hists, histSpec{
			loc: r.uniform(9, 13), usage: r.uniform(0.8, 1.2), noise: r.uniform(0.3, 0.5),
			center: r.uniform(2.5, 5.5), width: r.uniform(1.0, 1.8),
			shift: histShift[g], other: r.uniform(-0.5, 0.5), missing: r.uniform(0.008, 0.015),
		})
	}
	for _, name := range Columns {
		c := colSpec{
			kind: kindCounter, loc: r.uniform(2, 12), usage: r.uniform(0.5, 1.5),
			other: r.uniform(-0.7, 0.7), noise: r.uniform(0.5, 1.2),
			zero: r.uniform(0.005, 0.08), missing: r.uniform(0.003, 0.05),
		}
		if r.float64() < 0.3 { // zero-inflated counters: events most trucks never see
			c.zero = r.uniform(0.3, 0.85)
		}
		c.signal = informative[name]
		if g, ok := missingGroups[name]; ok {
			c.group, c.missing, c.posKeep = g.group, g.rate, 1
			if g.group == groupSparse {
				c.posKeep = 0.6 // a failing APS is more often fully instrumented
			}
		}
		switch {
		case len(name) == 6 && isHist(name[:2]):
			c.kind, c.hist, c.bin = kindBin, histIndex[name[:2]], int(name[5]-'0')
		case name == "cd_000":
			c.kind, c.constant, c.missing = kindConst, 1209600, 0.01
		case name == "ec_00" || name == "ds_000" || name == "ed_000":
			c.kind = kindDecimal
		}
		if cp, ok := copies[name]; ok {
			c.kind, c.src, c.scale = kindCopy, ColumnIndex(cp.src), cp.scale
		}
		if name == "ac_000" || name == "ca_000" {
			c.sentinel = 0.01
		}
		sc.cols = append(sc.cols, c)
	}
	return sc
}

func isHist(prefix string) bool {
	for _, g := range HistogramGroups {
		if g == prefix {
			return true
		}
	}
	return false
}
