package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/audit"
)

func newCheckpointCmd() *cobra.Command {
	var publicKey bool
	var signingKey string
	var size uint64
	cmd := &cobra.Command{
		Use:   "checkpoint TOPIC PARTITION | checkpoint --public-key",
		Short: "Print a partition's signed checkpoint, or the node's public key",
		Long: `Print the signed checkpoint (C2SP tlog-checkpoint) of a partition's Merkle
tree: its origin, tree size and root, signed by the node that tiered it. Keep
it: 'tierlog prove-consistency --from-checkpoint FILE' later proves that the
history still extends it. --size prints the one made at that tree size
(default: the latest, after the last tiered segment).

With --public-key, print the public key of the node's signing key instead:
the KEY 'tierlog verify-proof' takes. It is read from --signing-key FILE
(serve's key file, not changed) or asked of the server.

Exit codes: 0 printed, 1 it cannot be (the message says why), 2 usage error.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if publicKey {
				return maxArgs()(cmd, args)
			}
			return exactArgs("TOPIC", "PARTITION")(cmd, args)
		},
	}
	pf := addProverFlags(cmd)
	f := cmd.Flags()
	f.BoolVar(&publicKey, "public-key", false, "print the node's public key instead")
	f.StringVar(&signingKey, "signing-key", "", "with --public-key: read it from this private key file (serve's --signing-key) instead of the server")
	f.Uint64Var(&size, "size", 0, "the checkpoint made at this tree size (default: the latest)")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if publicKey {
			k, err := nodePublicKey(cmd, pf, signingKey)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), k)
			return nil
		}
		if signingKey != "" {
			return usageErrorf("--signing-key goes with --public-key")
		}
		partition, err := parsePartition(args[1])
		if err != nil {
			return err
		}
		p, err := pf.open(cmd)
		if err != nil {
			return err
		}
		defer p.close()
		signed, err := p.checkpoint(cmd.Context(), args[0], partition, size)
		if err != nil {
			return err
		}
		_, err = cmd.OutOrStdout().Write(signed)
		return err
	})
	return cmd
}

// nodePublicKey is the public key of the private key file at path, or,
// without one, the server's.
func nodePublicKey(cmd *cobra.Command, pf *proverFlags, path string) (string, error) {
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		k, err := audit.ParseKey(strings.TrimSpace(string(raw)))
		if err != nil {
			return "", fmt.Errorf("--signing-key %s: %w", path, err)
		}
		return k.Public, nil
	}
	if pf.bucket != "" {
		return "", usageErrorf("--public-key takes --signing-key FILE or the server, not --bucket (the bucket holds every node's under _tierlog/keys/, which only the node's own copy can vouch for)")
	}
	c, closeConn, err := pf.client.dial()
	if err != nil {
		return "", err
	}
	defer closeConn()
	resp, err := c.PublicKey(cmd.Context(), &tierlogv1.PublicKeyRequest{})
	if err != nil {
		return "", pf.client.rpcError("public key", err)
	}
	return resp.GetPublicKey(), nil
}
