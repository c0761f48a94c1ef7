package audit

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// OpenWith is Open with several keys: the checkpoint must carry a valid
// signature by one of vs. The error of a checkpoint signed only by other
// keys names them.
func OpenWith(text []byte, origin string, vs note.Verifiers) (*Checkpoint, error) {
	n, err := note.Open(text, vs)
	if err != nil {
		var unv *note.UnverifiedNoteError
		if errors.As(err, &unv) {
			var names []string
			for _, s := range unv.Note.UnverifiedSigs {
				names = append(names, s.Name)
			}
			return nil, fmt.Errorf("audit: checkpoint signature: signed by %s, none of them a key given", strings.Join(names, ", "))
		}
		return nil, fmt.Errorf("audit: checkpoint signature: %w", err)
	}
	// note.Open checked the signature of a key of vs; Open parses the body
	// (and checks that signature again, which costs microseconds).
	v, err := vs.Verifier(n.Sigs[0].Name, n.Sigs[0].Hash)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint signature: %w", err)
	}
	return Open(text, origin, v)
}

// LoadPublicKeys reads public keys (Key.Public strings) from arg: a key
// itself, or a file holding one key per line (blank lines and lines
// starting with # are skipped).
func LoadPublicKeys(arg string) (note.Verifiers, error) {
	text := arg
	if !strings.Contains(arg, "+") {
		raw, err := os.ReadFile(arg)
		if err != nil {
			return nil, fmt.Errorf("audit: public keys: %q is neither a key (<name>+<hash>+<key>) nor a readable file: %w", arg, err)
		}
		text = string(raw)
	} else if raw, err := os.ReadFile(arg); err == nil {
		text = string(raw) // a file whose name holds a "+"
	}
	var vs []note.Verifier
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := NewVerifier(line)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("audit: public keys: %s holds no key", arg)
	}
	return note.VerifierList(vs...), nil
}
