package attest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
)

// SupplementSPDX adds to an SPDX JSON document what BuildKit adds to the
// SBOM of an image: every file without a comment gets "layerID: DIGEST",
// the layer that holds it (layerOf, given the file's absolute path), and
// the creators list tool ("Tool: NAME"). The document is otherwise kept
// (its JSON re-encoded).
func SupplementSPDX(doc []byte, layerOf func(path string) (string, bool), tool string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode SPDX document: %w", err)
	}
	if files, ok := m["files"].([]any); ok {
		for _, f := range files {
			fm, ok := f.(map[string]any)
			if !ok {
				continue
			}
			name, _ := fm["fileName"].(string)
			if c, _ := fm["comment"].(string); c != "" || name == "" {
				continue
			}
			if d, ok := layerOf(path.Join("/", name)); ok {
				fm["comment"] = "layerID: " + d
			}
		}
	}
	if tool != "" {
		ci, ok := m["creationInfo"].(map[string]any)
		if !ok {
			ci = map[string]any{}
			m["creationInfo"] = ci
		}
		creators, _ := ci["creators"].([]any)
		ci["creators"] = append(creators, "Tool: "+tool)
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode SPDX document: %w", err)
	}
	return out, nil
}
