package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/linkedge/linkedge/internal/release"
)

func runKeys(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newKeysCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestKeysGenerateAndID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	out, err := runKeys(t, "generate", "--out", dir)
	if err != nil {
		t.Fatalf("generate: %v\n%s", err, out)
	}
	pub, err := release.ReadPublicKeyFile(filepath.Join(dir, "publisher.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := release.ReadPrivateKeyFile(filepath.Join(dir, "publisher.key")); err != nil {
		t.Fatal(err)
	}
	id := release.KeyID(pub)
	if !strings.Contains(out, id) || !strings.Contains(out, filepath.Join(dir, "publisher.key")) {
		t.Errorf("output does not show the key id and paths:\n%s", out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "publisher.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode: %v %v", fi, err)
	}

	for _, f := range []string{"publisher.pub", "publisher.key"} {
		got, err := runKeys(t, "id", filepath.Join(dir, f))
		if err != nil || strings.TrimSpace(got) != id {
			t.Errorf("id %s = %q, %v; want %s", f, got, err, id)
		}
	}

	// No silent overwrite, and nothing changed by the refusal.
	out, err = runKeys(t, "generate", "--out", dir)
	if err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second generate: %v\n%s", err, out)
	}
	if again, _ := release.ReadPublicKeyFile(filepath.Join(dir, "publisher.pub")); !again.Equal(pub) {
		t.Error("refused generate changed the public key")
	}
	if _, err := runKeys(t, "generate", "--out", dir, "--force"); err != nil {
		t.Fatalf("generate --force: %v", err)
	}
	if again, _ := release.ReadPublicKeyFile(filepath.Join(dir, "publisher.pub")); again.Equal(pub) {
		t.Error("--force did not replace the key")
	}
}

func TestKeysGenerateErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := runKeys(t, "generate"); err == nil {
		t.Error("generate without --out succeeded")
	}
	if _, err := runKeys(t, "generate", "--out", dir, "--name", "../x"); err == nil {
		t.Error("generate accepted a name with a path separator")
	}
	if _, err := runKeys(t, "id", filepath.Join(dir, "missing.pub")); err == nil {
		t.Error("id of a missing file succeeded")
	}
	junk := filepath.Join(dir, "junk.pub")
	if err := os.WriteFile(junk, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runKeys(t, "id", junk); err == nil || !strings.Contains(err.Error(), "junk.pub") {
		t.Errorf("id of a junk file: %v", err)
	}
}
