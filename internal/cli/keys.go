package cli

import (
	"crypto/ed25519"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
)

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create and inspect the Ed25519 keys that sign model releases",
		Long: `The publisher signs every release document with its private key; each truck pins the
matching public key and refuses any release not signed by a pinned key. The broker,
the network and the artifact store are not trusted: the key is.

  NAME.key  PKCS#8 PEM private key, mode 0600. Publisher only; never copy it to a truck.
  NAME.pub  PKIX PEM public key. Install on every truck (and keep a copy in git).

A key is named by its key id, the first 16 hex digits of the SHA-256 of the raw public
key; releases carry the id of the key that signed them. To rotate, generate a new pair,
pin BOTH public keys on the trucks, switch the publisher to the new private key, then
unpin the old one.`,
	}
	cmd.AddCommand(newKeysGenerateCmd(), newKeysIDCmd())
	return cmd
}

func newKeysGenerateCmd() *cobra.Command {
	var dir, name string
	var force bool
	cmd := &cobra.Command{
		Use:   "generate --out DIR [--name publisher] [--force]",
		Short: "Create a release-signing key pair: DIR/NAME.key and DIR/NAME.pub",
		Long: `Generate creates a new Ed25519 key pair and writes DIR/NAME.key (mode 0600) and
DIR/NAME.pub, creating DIR (mode 0700) if needed, and prints the new key id.

It refuses to overwrite existing key files unless --force is given: trucks pinned to
the old public key would refuse every release signed with the new private key.`,
		Example: `  # the publisher's key, then copy keys/publisher.pub to every truck
  linkedge keys generate --out ./keys

  # a second key for a rotation
  linkedge keys generate --out ./keys --name publisher-2026`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return generateKeys(cmd.OutOrStdout(), dir, name, force)
		},
	}
	cmd.Flags().StringVar(&dir, "out", "", "directory to write the key files to (required)")
	cmd.Flags().StringVar(&name, "name", "publisher", "base name of the key files: NAME.key and NAME.pub")
	cmd.Flags().BoolVar(&force, "force", false, "replace existing key files")
	cmd.MarkFlagRequired("out")
	return cmd
}

// generateKeys writes a new key pair to dir/name.key and dir/name.pub.
func generateKeys(w io.Writer, dir, name string, force bool) error {
	if topics.ValidID(name) != nil {
		// The same alphabet as model and truck ids: a plain file name
		// with no path separators.
		return fmt.Errorf("--name %q: use 1-64 characters of A-Z a-z 0-9 . _ -", name)
	}
	keyPath := filepath.Join(dir, name+".key")
	pubPath := filepath.Join(dir, name+".pub")
	if !force {
		for _, p := range []string{keyPath, pubPath} {
			_, err := os.Lstat(p)
			if err == nil {
				return fmt.Errorf("%s already exists; pass --force to replace it (trucks pinned to the old public key will then refuse releases signed with the new key), or choose another --name", p)
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	pub, priv := release.GenerateKey()
	if err := release.WritePrivateKeyFile(keyPath, priv); err != nil {
		return err
	}
	if err := release.WritePublicKeyFile(pubPath, pub); err != nil {
		return fmt.Errorf("%w; %s now holds a new private key without its public key, so run again with --force", err, keyPath)
	}
	fmt.Fprintf(w, "key id:      %s\nprivate key: %s (publisher only, keep secret)\npublic key:  %s (pin on every truck)\n",
		release.KeyID(pub), keyPath, pubPath)
	return nil
}

func newKeysIDCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "id FILE...",
		Short: "Print the key id of a public (or private) key file",
		Long: `Id prints the key id of each PEM key file: the id that release documents carry in
signature.key_id and that truck logs show when they refuse a release signed by an
unknown key. A .key file gives the id of its public half.

With one file it prints just the id; with several, one "ID FILE" line each.`,
		Example: `  linkedge keys id keys/publisher.pub
  linkedge keys id /etc/linkedge/keys/*.pub`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			for _, path := range args {
				pub, err := readAnyKey(path)
				if err != nil {
					return err
				}
				if len(args) == 1 {
					fmt.Fprintln(w, release.KeyID(pub))
				} else {
					fmt.Fprintf(w, "%s  %s\n", release.KeyID(pub), path)
				}
			}
			return nil
		},
	}
}

// readAnyKey returns the public key in a .pub file, or the public half of
// the key in a .key file.
func readAnyKey(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if b, _ := pem.Decode(data); b != nil && b.Type == "PRIVATE KEY" {
		priv, err := release.ParsePrivateKeyPEM(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return priv.Public().(ed25519.PublicKey), nil
	}
	pub, err := release.ParsePublicKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}
