package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// encoding/json matches field names case-insensitively and keeps the last
// of a duplicated name, so a proof file could carry "offset" and "OFFSET"
// and say one thing to tierlog and another to an auditor's script (which
// reads the exact names). checkShape walks the raw JSON first and refuses
// every object whose names are not exactly the documented ones, each once.

// shape is what a JSON value of a proof file must be: an object with
// exactly fields, an array of items, or (neither set) a scalar whose type
// the decoder checks - null only if nullable (the decoder would take null
// for an empty value).
type shape struct {
	fields   map[string]*shape
	items    *shape
	nullable bool
}

var (
	scalar      = &shape{}
	orNull      = &shape{nullable: true} // a key or value: null is a null one
	headerShape = &shape{fields: map[string]*shape{"key": scalar, "value": orNull}}
	recordShape = &shape{fields: map[string]*shape{
		"offset": scalar, "timestamp": scalar, "key": orNull, "value": orNull,
		"headers": {items: headerShape}, "control": scalar,
	}}
	proofShapes = map[string]*shape{
		InclusionFormat: {fields: map[string]*shape{
			"format": scalar, "topic": scalar, "partition": scalar, "offset": scalar, "record": recordShape,
			"leaf": scalar, "tree_size": scalar, "inclusion_proof": {items: scalar}, "checkpoint": scalar,
		}},
		ConsistencyFormat: {fields: map[string]*shape{
			"format": scalar, "topic": scalar, "partition": scalar, "old_checkpoint": scalar,
			"new_checkpoint": scalar, "consistency_proof": {items: scalar},
		}},
	}
)

// checkShape checks that data is one JSON value of shape s and nothing
// after it.
func checkShape(data []byte, s *shape) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := s.walk(dec, "the file"); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("more after the proof's JSON object")
	}
	return nil
}

// walk reads one value of shape s from dec; where names it in errors.
func (s *shape) walk(dec *json.Decoder, where string) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	switch {
	case s.fields != nil:
		if tok != json.Delim('{') {
			return fmt.Errorf("%s: want an object, found %v", where, tok)
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			name := tok.(string) // an object's keys are strings
			sub, known := s.fields[name]
			switch {
			case !known:
				return fmt.Errorf("%s: unknown field %q%s", where, name, caseTwin(name, s.fields))
			case seen[name]:
				return fmt.Errorf("%s: field %q given twice", where, name)
			}
			seen[name] = true
			if err := sub.walk(dec, fmt.Sprintf("%q", name)); err != nil {
				return err
			}
		}
		if len(seen) < len(s.fields) {
			var missing []string
			for _, name := range slices.Sorted(maps.Keys(s.fields)) {
				if !seen[name] {
					missing = append(missing, name)
				}
			}
			return fmt.Errorf("%s: missing field %s", where, strings.Join(missing, ", "))
		}
		_, err = dec.Token() // '}'
		return err
	case s.items != nil:
		if tok != json.Delim('[') {
			return fmt.Errorf("%s: want an array, found %v", where, tok)
		}
		for i := 0; dec.More(); i++ {
			if err := s.items.walk(dec, fmt.Sprintf("%s[%d]", where, i)); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
		return err
	}
	if d, isDelim := tok.(json.Delim); isDelim {
		return fmt.Errorf("%s: want a string, number or boolean, found %v", where, d)
	}
	if tok == nil && !s.nullable {
		return fmt.Errorf("%s: null", where)
	}
	return nil
}

// caseTwin says which documented field a name differs from only in case.
func caseTwin(name string, fields map[string]*shape) string {
	for f := range fields {
		if strings.EqualFold(f, name) {
			return fmt.Sprintf(" (field names are case-sensitive: the field is %q)", f)
		}
	}
	return ""
}
