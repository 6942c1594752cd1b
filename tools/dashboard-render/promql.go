package main

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// A small evaluator for the subset of PromQL the dashboard uses, so the
// screenshot shows what the dashboard's own queries compute over the scraped
// samples:
//
//	selector        name{l="v", l!="v", l=~"re", l!~"re"}
//	range selector  name{...}[10s]   (only as the argument of rate/increase)
//	functions       rate, increase, histogram_quantile(q, v)
//	aggregations    sum, max, min, avg, with "by (labels)" before or after
//	binary ops      + - * / between scalars and vectors (one-to-one matching)
//
// rate and increase extrapolate as Prometheus does (extrapolatedRate), with
// counter resets handled; a window holds the samples in (t-window, t].
// Anything else is a parse error, so a dashboard query this program does not
// understand fails the render instead of being drawn wrong.

type labels map[string]string

func (l labels) key() string {
	names := make([]string, 0, len(l))
	for n := range l {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s=%q,", n, l[n])
	}
	return b.String()
}

func (l labels) without(drop ...string) labels {
	out := make(labels, len(l))
	for k, v := range l {
		out[k] = v
	}
	for _, d := range drop {
		delete(out, d)
	}
	return out
}

type elem struct {
	labels labels
	value  float64
}

// history is everything scraped: one map of series per scrape, in order.
type history struct {
	times   []time.Time
	samples []map[string]elem // series key -> sample
}

// ---- lexer -----------------------------------------------------------------

type token struct {
	kind string // "ident", "num", "str", "dur", or the punctuation itself
	text string
}

func lex(s string) ([]token, error) {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			v, err := strconv.Unquote(s[i : j+1])
			if err != nil {
				return nil, err
			}
			out = append(out, token{"str", v})
			i = j + 1
		case c == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unterminated range at %d", i)
			}
			out = append(out, token{"dur", strings.TrimSpace(s[i+1 : i+j])})
			i += j + 1
		case strings.ContainsRune("(){},/*+-", rune(c)):
			out = append(out, token{string(c), string(c)})
			i++
		case c == '=' || c == '!':
			if i+1 < len(s) && (s[i+1] == '=' || s[i+1] == '~') {
				out = append(out, token{s[i : i+2], s[i : i+2]})
				i += 2
			} else if c == '=' {
				out = append(out, token{"=", "="})
				i++
			} else {
				return nil, fmt.Errorf("unexpected %q at %d", c, i)
			}
		case c >= '0' && c <= '9' || c == '.':
			j := i
			for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.' || s[j] == 'e') {
				j++
			}
			out = append(out, token{"num", s[i:j]})
			i = j
		case c == '_' || unicode.IsLetter(rune(c)):
			j := i
			for j < len(s) && (s[j] == '_' || s[j] == ':' || unicode.IsLetter(rune(s[j])) || unicode.IsDigit(rune(s[j]))) {
				j++
			}
			out = append(out, token{"ident", s[i:j]})
			i = j
		default:
			return nil, fmt.Errorf("unexpected %q at %d", c, i)
		}
	}
	return out, nil
}

// ---- parser ----------------------------------------------------------------

type node interface {
	eval(h *history, i int) ([]elem, bool) // bool: scalar
}

type numNode float64

type matcher struct {
	name, op, value string
	re              *regexp.Regexp
}

type selNode struct {
	metric   string
	matchers []matcher
	window   time.Duration // 0: instant selector
}

type funcNode struct {
	name string
	args []node
}

type aggNode struct {
	op string
	by []string
	in node
}

type binNode struct {
	op   string
	l, r node
}

type parser struct {
	toks []token
	pos  int
}

func (p *parser) peek() token {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return token{kind: "eof"}
}

func (p *parser) next() token { t := p.peek(); p.pos++; return t }

func (p *parser) expect(kind string) (token, error) {
	t := p.next()
	if t.kind != kind {
		return t, fmt.Errorf("want %s, got %q", kind, t.text)
	}
	return t, nil
}

// parseQuery parses a query whose dashboard variables are already replaced.
func parseQuery(q string) (node, error) {
	toks, err := lex(q)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	n, err := p.additive()
	if err != nil {
		return nil, err
	}
	if p.peek().kind != "eof" {
		return nil, fmt.Errorf("trailing %q", p.peek().text)
	}
	return n, nil
}

func (p *parser) additive() (node, error) {
	l, err := p.multiplicative()
	if err != nil {
		return nil, err
	}
	for k := p.peek().kind; k == "+" || k == "-"; k = p.peek().kind {
		p.next()
		r, err := p.multiplicative()
		if err != nil {
			return nil, err
		}
		l = &binNode{op: k, l: l, r: r}
	}
	return l, nil
}

func (p *parser) multiplicative() (node, error) {
	l, err := p.term()
	if err != nil {
		return nil, err
	}
	for k := p.peek().kind; k == "*" || k == "/"; k = p.peek().kind {
		p.next()
		r, err := p.term()
		if err != nil {
			return nil, err
		}
		l = &binNode{op: k, l: l, r: r}
	}
	return l, nil
}

func (p *parser) labelList() ([]string, error) {
	if _, err := p.expect("("); err != nil {
		return nil, err
	}
	var names []string
	for p.peek().kind != ")" {
		t, err := p.expect("ident")
		if err != nil {
			return nil, err
		}
		names = append(names, t.text)
		if p.peek().kind == "," {
			p.next()
		}
	}
	p.next()
	return names, nil
}

func (p *parser) term() (node, error) {
	t := p.next()
	switch t.kind {
	case "num":
		v, err := strconv.ParseFloat(t.text, 64)
		return numNode(v), err
	case "(":
		n, err := p.additive()
		if err != nil {
			return nil, err
		}
		_, err = p.expect(")")
		return n, err
	case "ident":
	default:
		return nil, fmt.Errorf("unexpected %q", t.text)
	}
	switch t.text {
	case "sum", "max", "min", "avg":
		a := &aggNode{op: t.text}
		var err error
		if p.peek().text == "by" {
			p.next()
			if a.by, err = p.labelList(); err != nil {
				return nil, err
			}
		}
		if _, err := p.expect("("); err != nil {
			return nil, err
		}
		if a.in, err = p.additive(); err != nil {
			return nil, err
		}
		if _, err := p.expect(")"); err != nil {
			return nil, err
		}
		if p.peek().text == "by" {
			p.next()
			if a.by, err = p.labelList(); err != nil {
				return nil, err
			}
		}
		return a, nil
	case "rate", "increase", "histogram_quantile":
		f := &funcNode{name: t.text}
		if _, err := p.expect("("); err != nil {
			return nil, err
		}
		for {
			arg, err := p.additive()
			if err != nil {
				return nil, err
			}
			f.args = append(f.args, arg)
			if p.peek().kind != "," {
				break
			}
			p.next()
		}
		if _, err := p.expect(")"); err != nil {
			return nil, err
		}
		want := map[string]int{"rate": 1, "increase": 1, "histogram_quantile": 2}[f.name]
		if len(f.args) != want {
			return nil, fmt.Errorf("%s takes %d arguments", f.name, want)
		}
		if f.name != "histogram_quantile" {
			if s, ok := f.args[0].(*selNode); !ok || s.window == 0 {
				return nil, fmt.Errorf("%s needs a range selector", f.name)
			}
		}
		return f, nil
	}
	s := &selNode{metric: t.text}
	if p.peek().kind == "{" {
		p.next()
		for p.peek().kind != "}" {
			name, err := p.expect("ident")
			if err != nil {
				return nil, err
			}
			op := p.next()
			if op.kind != "=" && op.kind != "!=" && op.kind != "=~" && op.kind != "!~" {
				return nil, fmt.Errorf("bad matcher operator %q", op.text)
			}
			val, err := p.expect("str")
			if err != nil {
				return nil, err
			}
			m := matcher{name: name.text, op: op.kind, value: val.text}
			if op.kind == "=~" || op.kind == "!~" {
				if m.re, err = regexp.Compile("^(?:" + val.text + ")$"); err != nil {
					return nil, err
				}
			}
			s.matchers = append(s.matchers, m)
			if p.peek().kind == "," {
				p.next()
			}
		}
		p.next()
	}
	if p.peek().kind == "dur" {
		d, err := time.ParseDuration(p.next().text)
		if err != nil {
			return nil, err
		}
		s.window = d
	}
	return s, nil
}

// ---- evaluation ------------------------------------------------------------

func (n numNode) eval(*history, int) ([]elem, bool) {
	return []elem{{labels: labels{}, value: float64(n)}}, true
}

func (s *selNode) matches(l labels) bool {
	if l["__name__"] != s.metric {
		return false
	}
	for _, m := range s.matchers {
		v := l[m.name]
		var ok bool
		switch m.op {
		case "=":
			ok = v == m.value
		case "!=":
			ok = v != m.value
		case "=~":
			ok = m.re.MatchString(v)
		case "!~":
			ok = !m.re.MatchString(v)
		}
		if !ok {
			return false
		}
	}
	return true
}

func (s *selNode) eval(h *history, i int) ([]elem, bool) {
	var out []elem
	for _, e := range h.samples[i] {
		if s.matches(e.labels) {
			out = append(out, e)
		}
	}
	return out, false
}

// rangeRate is rate (perSecond) or increase over the window ending at scrape i.
func (s *selNode) rangeRate(h *history, i int, perSecond bool) []elem {
	type pts struct {
		labels labels
		t      []time.Time
		v      []float64
	}
	series := map[string]*pts{}
	var order []string
	for j := i; j >= 0 && h.times[i].Sub(h.times[j]) < s.window; j-- {
		for k, e := range h.samples[j] {
			if !s.matches(e.labels) {
				continue
			}
			p := series[k]
			if p == nil {
				p = &pts{labels: e.labels}
				series[k] = p
				order = append(order, k)
			}
			p.t = append(p.t, h.times[j])
			p.v = append(p.v, e.value)
		}
	}
	var out []elem
	for _, k := range order {
		p := series[k]
		if len(p.v) < 2 {
			continue
		}
		// Points are newest first. Prometheus' extrapolatedRate: the
		// increase between the first and last sample, extrapolated towards
		// the window's edges (not past where the counter would be zero, nor
		// further than about half a scrape interval past a gap), divided by
		// the window for rate.
		n := len(p.v)
		delta := 0.0
		for j := n - 1; j > 0; j-- {
			if d := p.v[j-1] - p.v[j]; d >= 0 {
				delta += d
			} else {
				delta += p.v[j-1] // counter reset
			}
		}
		first := p.v[n-1]
		sampled := p.t[0].Sub(p.t[n-1]).Seconds()
		toStart := p.t[n-1].Sub(h.times[i].Add(-s.window)).Seconds()
		toEnd := h.times[i].Sub(p.t[0]).Seconds()
		avg := sampled / float64(n-1)
		if delta > 0 && first >= 0 {
			if toZero := sampled * first / delta; toZero < toStart {
				toStart = toZero
			}
		}
		interval := sampled
		if toStart < avg*1.1 {
			interval += toStart
		} else {
			interval += avg / 2
		}
		if toEnd < avg*1.1 {
			interval += toEnd
		} else {
			interval += avg / 2
		}
		v := delta * interval / sampled
		if perSecond {
			v /= s.window.Seconds()
		}
		out = append(out, elem{labels: p.labels.without("__name__"), value: v})
	}
	return out
}

func (f *funcNode) eval(h *history, i int) ([]elem, bool) {
	switch f.name {
	case "rate":
		return f.args[0].(*selNode).rangeRate(h, i, true), false
	case "increase":
		return f.args[0].(*selNode).rangeRate(h, i, false), false
	}
	qv, _ := f.args[0].eval(h, i)
	q := math.NaN()
	if len(qv) == 1 {
		q = qv[0].value
	}
	in, _ := f.args[1].eval(h, i)
	type bucket struct{ le, count float64 }
	groups := map[string][]bucket{}
	lbl := map[string]labels{}
	for _, e := range in {
		le, err := strconv.ParseFloat(e.labels["le"], 64)
		if err != nil {
			continue
		}
		l := e.labels.without("le", "__name__")
		k := l.key()
		groups[k] = append(groups[k], bucket{le, e.value})
		lbl[k] = l
	}
	var out []elem
	for k, bs := range groups {
		sort.Slice(bs, func(a, b int) bool { return bs[a].le < bs[b].le })
		if !math.IsInf(bs[len(bs)-1].le, 1) || len(bs) < 2 {
			continue
		}
		for j := 1; j < len(bs); j++ { // enforce monotonicity, as Prometheus does
			bs[j].count = math.Max(bs[j].count, bs[j-1].count)
		}
		total := bs[len(bs)-1].count
		if total == 0 || math.IsNaN(q) {
			continue
		}
		rank := q * total
		j := sort.Search(len(bs)-1, func(j int) bool { return bs[j].count >= rank })
		var v float64
		switch {
		case j == len(bs)-1:
			v = bs[len(bs)-2].le
		default:
			lo, below := 0.0, 0.0
			if j > 0 {
				lo, below = bs[j-1].le, bs[j-1].count
			}
			v = lo + (bs[j].le-lo)*(rank-below)/(bs[j].count-below)
		}
		out = append(out, elem{labels: lbl[k], value: v})
	}
	return out, false
}

func (a *aggNode) eval(h *history, i int) ([]elem, bool) {
	in, _ := a.in.eval(h, i)
	type acc struct {
		labels labels
		v      float64
		n      int
	}
	groups := map[string]*acc{}
	var order []string
	for _, e := range in {
		l := labels{}
		for _, b := range a.by {
			if v, ok := e.labels[b]; ok && v != "" {
				l[b] = v
			}
		}
		k := l.key()
		g := groups[k]
		if g == nil {
			g = &acc{labels: l, v: e.value}
			groups[k] = g
			order = append(order, k)
		} else {
			switch a.op {
			case "sum", "avg":
				g.v += e.value
			case "max":
				g.v = math.Max(g.v, e.value)
			case "min":
				g.v = math.Min(g.v, e.value)
			}
		}
		g.n++
	}
	out := make([]elem, 0, len(order))
	for _, k := range order {
		g := groups[k]
		if a.op == "avg" {
			g.v /= float64(g.n)
		}
		out = append(out, elem{labels: g.labels, value: g.v})
	}
	return out, false
}

func arith(op string, a, b float64) float64 {
	switch op {
	case "+":
		return a + b
	case "-":
		return a - b
	case "*":
		return a * b
	}
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

func (b *binNode) eval(h *history, i int) ([]elem, bool) {
	l, ls := b.l.eval(h, i)
	r, rs := b.r.eval(h, i)
	switch {
	case ls && rs:
		return []elem{{labels: labels{}, value: arith(b.op, l[0].value, r[0].value)}}, true
	case ls:
		out := make([]elem, len(r))
		for j, e := range r {
			out[j] = elem{e.labels, arith(b.op, l[0].value, e.value)}
		}
		return out, false
	case rs:
		out := make([]elem, len(l))
		for j, e := range l {
			out[j] = elem{e.labels, arith(b.op, e.value, r[0].value)}
		}
		return out, false
	}
	right := map[string]float64{}
	for _, e := range r {
		right[e.labels.without("__name__").key()] = e.value
	}
	var out []elem
	for _, e := range l {
		if v, ok := right[e.labels.without("__name__").key()]; ok {
			out = append(out, elem{e.labels.without("__name__"), arith(b.op, e.value, v)})
		}
	}
	return out, false
}
