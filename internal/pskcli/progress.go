package pskcli

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress reports how far a long write is, on stderr: a bar redrawn in
// place on a terminal, otherwise a plain line at every tenth.
type progress struct {
	w            io.Writer
	tty          bool
	label        string
	total, tenth int
	last         time.Time
}

func newProgress(w io.Writer, label string, total int) *progress {
	return &progress{w: w, tty: isTerminal(w), label: label, total: total}
}

func (p *progress) update(n int) {
	if p.tty && time.Since(p.last) >= 100*time.Millisecond {
		p.last = time.Now()
		fmt.Fprintf(p.w, "\r%s [%-30s] %d/%d", p.label, strings.Repeat("#", n*30/p.total), n, p.total)
	} else if t := n * 10 / p.total; !p.tty && t > p.tenth && n < p.total {
		p.tenth = t
		fmt.Fprintf(p.w, "%s: %d/%d (%d%%)\n", p.label, n, p.total, n*100/p.total)
	}
}

func (p *progress) done() {
	if p.tty {
		fmt.Fprintf(p.w, "\r%s [%s] %d/%d\n", p.label, strings.Repeat("#", 30), p.total, p.total)
		return
	}
	fmt.Fprintf(p.w, "%s: %d/%d (100%%)\n", p.label, p.total, p.total)
}
