package main

import (
	"encoding/csv"
	"fmt"
	"strings"
)

// csvFields splits a flag value of comma-separated key=value fields
// (--output, --cache-to, --cache-from, --secret) as buildx does,
// as one CSV record: a field in double quotes may hold commas
// ('type=oci,dest=out.tar,"name=a:1,b:2"').
func csvFields(v string) ([]string, error) {
	r := csv.NewReader(strings.NewReader(v))
	r.LazyQuotes = false
	fields, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", v, err)
	}
	return fields, nil
}
