package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/linkedge/linkedge/inference/aps"
)

func TestGenAPSWritesLoadableSyntheticCSV(t *testing.T) {
	out := filepath.Join(t.TempDir(), "synthetic.csv")
	cmd := newToolkitGenCmd()
	var stderr bytes.Buffer
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"--seed", "7", "--rows", "600", "--positives", "25", "--out", out})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	if !strings.Contains(lines[0], "SYNTHETIC") || !strings.HasPrefix(lines[20], "class,aa_000,") {
		t.Errorf("want the SYNTHETIC notice first and the header on line 21, got %q ... %q", lines[0], lines[20])
	}
	if strings.Contains(string(raw), "Scania CV AB") {
		t.Error("synthetic file carries the Scania licence text")
	}
	ds, err := aps.LoadUCIFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Len() != 600 || ds.Positives() != 25 {
		t.Errorf("read back %d rows, %d positive; want 600, 25", ds.Len(), ds.Positives())
	}
	if !strings.Contains(stderr.String(), "SYNTHETIC") {
		t.Errorf("summary does not say SYNTHETIC: %q", stderr.String())
	}
}

func TestGenAPSDefaultRate(t *testing.T) {
	cmd := newToolkitGenCmd()
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetArgs([]string{"--rows", "120", "--out", "-"})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	ds, err := aps.LoadUCI(&stdout)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Positives() != 2 {
		t.Errorf("%d positives in 120 rows, want 2 (the real rate of 1 in 60)", ds.Positives())
	}
}

func TestToolkitCommandsRejectBadFlags(t *testing.T) {
	tests := []struct {
		name string
		gen  bool
		args []string
		want string
	}{
		{"uci train without test", false, []string{"--uci-train", "a.csv"}, "both"},
		{"uci without out", false, []string{"--uci-train", "a.csv", "--uci-test", "b.csv"}, "--out is required"},
		{"uci file missing", false, []string{"--uci-train", "/nonexistent/a.csv", "--uci-test", "b.csv", "--out", "x"}, "no such file"},
		{"gen without out", true, []string{"--rows", "10"}, "out"},
		{"gen zero rows", true, []string{"--rows", "0", "--out", "-"}, "--rows"},
		{"gen too many positives", true, []string{"--rows", "10", "--positives", "11", "--out", "-"}, "--positives"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newToolkitTrainCmd()
			if tc.gen {
				cmd = newToolkitGenCmd()
			}
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetArgs(tc.args)
			err := cmd.ExecuteContext(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
