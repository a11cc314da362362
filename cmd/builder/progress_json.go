package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/builder-dev/builder/executor"
)

// The rawjson progress is buildx's: one BuildKit SolveStatus per line, so
// tools that read `docker buildx build --progress rawjson` read builder's.
// Steps are vertexes (started, completed, cached, error), RUN output is
// logs of its vertex (stream, base64 data, timestamp), warnings are
// warnings; builder's cache explanations ride along in the vertex.
type solveStatus struct {
	Vertexes []vertexStatus `json:"vertexes,omitempty"`
	Logs     []vertexLog    `json:"logs,omitempty"`
	Warnings []vertexWarn   `json:"warnings,omitempty"`
}

type vertexStatus struct {
	Digest    string     `json:"digest"`
	Name      string     `json:"name"`
	Started   *time.Time `json:"started,omitempty"`
	Completed *time.Time `json:"completed,omitempty"`
	Cached    bool       `json:"cached,omitempty"`
	Error     string     `json:"error,omitempty"`
	// builder's: the step's place in the Dockerfile and why it ran.
	Line        int    `json:"line,omitempty"`
	CacheReason string `json:"cacheReason,omitempty"`
}

type vertexLog struct {
	Vertex    string    `json:"vertex"`
	Stream    int       `json:"stream"`
	Data      []byte    `json:"data"`
	Timestamp time.Time `json:"timestamp"`
}

type vertexWarn struct {
	Vertex string        `json:"vertex,omitempty"`
	Level  int           `json:"level"`
	Short  []byte        `json:"short"`
	Detail [][]byte      `json:"detail,omitempty"`
	URL    string        `json:"url,omitempty"`
	Range  []sourceRange `json:"range,omitempty"`
	// builder's: the lint rule and its message alone.
	Rule    string `json:"rule,omitempty"`
	Message string `json:"message,omitempty"`
}

type sourceRange struct {
	Start position `json:"start"`
	End   position `json:"end"`
}

type position struct {
	Line int `json:"line"`
}

// vertexDigest names a step for the whole build, as a digest like
// BuildKit's vertex digests.
func vertexDigest(key string) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte("builder-step:"+key)))
}

func (p *progress) writeStatus(st solveStatus) {
	b, _ := json.Marshal(st)
	fmt.Fprintf(p.w, "%s\n", b)
}

// jsonEvent writes a step's start or end as a vertex.
func (p *progress) jsonEvent(ev executor.Event) {
	k := stepKey(ev)
	now := time.Now().UTC()
	v := vertexStatus{Digest: vertexDigest(k), Name: ev.Title(), Line: ev.Line}
	if ev.Kind == executor.StepStarted {
		p.start[k] = now
		v.Started = &now
		p.writeStatus(solveStatus{Vertexes: []vertexStatus{v}})
		return
	}
	started, ok := p.start[k]
	if !ok {
		started = now
	}
	v.Started, v.Completed = &started, &now
	v.Cached = ev.Err == nil && !ev.Metadata && ev.Cache == "hit"
	if ev.Cache == "miss" || v.Cached {
		v.CacheReason = ev.Reason
	}
	if ev.Err != nil {
		v.Error = rootCause(ev.Err).Error()
	}
	p.writeStatus(solveStatus{Vertexes: []vertexStatus{v}})
}

// jsonLog writes a line of a step's output.
func (p *progress) jsonLog(key string, line []byte) {
	data := append(append([]byte{}, line...), '\n')
	p.writeStatus(solveStatus{Logs: []vertexLog{{Vertex: vertexDigest(key), Stream: 1, Data: data, Timestamp: time.Now().UTC()}}})
}

// jsonNotice writes a message about the build: warnings as warnings,
// anything else as a completed vertex of its own, as BuildKit shows
// "exporting to image".
func (p *progress) jsonNotice(msg string) {
	if w, ok := strings.CutPrefix(msg, "[warning] "); ok {
		p.writeStatus(solveStatus{Warnings: []vertexWarn{{Level: 1, Short: []byte(w)}}})
		return
	}
	now := time.Now().UTC()
	p.next++
	v := vertexStatus{Digest: vertexDigest(fmt.Sprintf("notice/%d", p.next)), Name: msg, Started: &now, Completed: &now}
	p.writeStatus(solveStatus{Vertexes: []vertexStatus{v}})
}
