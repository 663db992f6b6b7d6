package aps

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzLoadUCI feeds arbitrary text to the loader: it must never panic, and
// whatever it accepts must survive WriteCSV and load back unchanged.
func FuzzLoadUCI(f *testing.F) {
	var good bytes.Buffer
	if err := WriteCSV(&good, Generate(3, 3, 0.4), SyntheticPreamble(3, 3, 1)); err != nil {
		f.Fatal(err)
	}
	f.Add(good.String())
	f.Add(header + "\n" + row("pos", map[int]string{0: "na", 1: "1e5", 2: "-0", 3: "+7", 4: ".5"}) + "\n")
	f.Add("class,\n")
	f.Add("\uFEFF" + header + "\r\n" + row("neg", nil))
	f.Add(strings.Repeat("x,", 200))
	f.Fuzz(func(t *testing.T, in string) {
		ds, err := LoadUCI(strings.NewReader(in))
		if err != nil {
			return
		}
		if err := ds.Validate(); err != nil {
			t.Fatalf("loaded data fails validation: %v", err)
		}
		var buf bytes.Buffer
		if err := WriteCSV(&buf, ds, nil); err != nil {
			t.Fatalf("write back: %v", err)
		}
		back, err := LoadUCI(&buf)
		if err != nil {
			t.Fatalf("reload: %v", err)
		}
		assertSameData(t, ds, back)
	})
}
