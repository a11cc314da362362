package executor

import (
	"strconv"

	"github.com/builder-dev/builder/cache"
)

// copyInputs are the inputs of a COPY from a stage, an image or scratch
// (named by id, sourceID) for its input key: what its result depends on
// besides the files it reads — flags, destination (resolved against the
// workdir), sources as written, heredocs by content. Nothing is read.
func copyInputs(req copyRequest, id string) (cache.Inputs, error) {
	p := &copyPlan{req: req}
	if err := p.validate(); err != nil {
		return cache.Inputs{}, err
	}
	for i, hd := range req.Heredocs {
		p.sources = append(p.sources, copyHeredoc(len(req.Sources)+i, hd))
	}
	fields := append(p.Fields(), cache.Field{Name: "from", Value: id})
	for i, src := range req.Sources {
		fields = append(fields, cache.Field{Name: "source." + strconv.Itoa(i), Value: src})
	}
	return cache.Inputs{Op: req.op(), Fields: fields, Files: p.Inputs()}, nil
}
