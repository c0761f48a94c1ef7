package main

import (
	"fmt"

	"github.com/spf13/cobra"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
)

// legalHoldKey is the topic config that `topic legal-hold` sets.
const legalHoldKey = "remote.object.lock.legal.hold"

func newTopicLegalHoldCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "legal-hold NAME on|off",
		Short: "Put an S3 Object Lock legal hold on a topic's objects, or lift it",
		Long: `Put a legal hold on every object of topic NAME in the bucket, or lift it.

While the hold is on, the bucket refuses to delete any version of the topic's
objects - to anyone, whatever their retention date - and tierlog's remote
retention deletes nothing of the topic. It sets the topic config
` + legalHoldKey + `; the tiering daemon applies the change to the objects
already in the bucket (segments and tlog/ objects) within a pass, and uploads
new ones with it. The bucket must have been created with Object Lock.`,
		Args: exactArgs("NAME", "on|off"),
	}
	cf := addClientFlags(cmd)
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		var value string
		switch args[1] {
		case "on":
			value = "true"
		case "off":
			value = "false"
		default:
			return usageErrorf("legal-hold %s %s: say on or off", args[0], args[1])
		}
		client, done, err := cf.dial()
		if err != nil {
			return err
		}
		defer done()
		_, err = client.AlterTopicConfig(cmd.Context(), &tierlogv1.AlterTopicConfigRequest{Name: args[0], Set: map[string]string{legalHoldKey: value}})
		if err != nil {
			return cf.rpcError("legal hold "+args[1]+" for topic "+args[0], err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "legal hold %s for topic %s (%s=%s): new uploads carry it now; the objects already in the bucket within a tiering pass\n",
			args[1], args[0], legalHoldKey, value)
		return nil
	})
	return cmd
}
