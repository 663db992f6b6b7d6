package apsmodels

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Report describes a Build.
type Report struct {
	Dataset       string
	Synthetic     bool
	TrainRows     int
	TestRows      int
	TestPositives int
	Models        []ModelReport
	Elapsed       time.Duration
}

// ModelReport describes one built model and its test result.
type ModelReport struct {
	Name      string
	Version   int64
	Trees     int
	Depth     int
	Threshold float64
	// CVCost is the cost of Threshold on the out-of-fold training scores.
	CVCost int64
	// TP, FP, TN, FN and Cost are measured on the test set.
	TP, FP, TN, FN int
	Cost           int64
	// MaxORTDiff is the largest |Go − ONNX Runtime| score over the test
	// set; LabelFlips counts test rows the two label differently (rows
	// sitting on the threshold to within that difference).
	MaxORTDiff  float64
	LabelFlips  int
	TrainTime   time.Duration
	ModelBytes  int
	BundleBytes int
	SHA256      string
}

// WriteTable prints the cost table: one line per model.
func (r *Report) WriteTable(w io.Writer) error {
	kind := "real"
	if r.Synthetic {
		kind = "SYNTHETIC"
	}
	fmt.Fprintf(w, "test set: %s, %d rows (%d positive), %s data; cost = 10*FP + 500*FN\n", r.Dataset, r.TestRows, r.TestPositives, kind)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\ttrees\tdepth\tthreshold\tFP\tFN\tcost\tcv cost\ttrain time\tbundle bytes\t")
	for _, m := range r.Models {
		fmt.Fprintf(tw, "%s v%d\t%d\t%d\t%.6f\t%d\t%d\t%d\t%d\t%.1fs\t%d\t\n",
			m.Name, m.Version, m.Trees, m.Depth, m.Threshold, m.FP, m.FN, m.Cost, m.CVCost, m.TrainTime.Seconds(), m.BundleBytes)
	}
	return tw.Flush()
}
