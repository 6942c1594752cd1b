package main

import (
	"fmt"
	"html"
	"math"
	"strings"
	"time"
)

// Layout of Grafana's grid: 24 columns, 30 px per height unit, 8 px gaps.
const (
	pagePad = 12
	gap     = 8
	unitH   = 30
	headerH = 92
)

type page struct {
	width   int
	title   string
	vars    []string // "label: value" shown in the variable bar
	note    string
	times   []time.Time
	panels  []*panel
	results [][]series
}

func (pg *page) height() int {
	bottom := 0
	for _, p := range pg.panels {
		bottom = max(bottom, p.GridPos.Y+p.GridPos.H)
	}
	return headerH + bottom*unitH + (bottom-1)*gap + 2*pagePad
}

func (pg *page) html() string {
	var b strings.Builder
	colW := float64(pg.width-2*pagePad-23*gap) / 24
	fmt.Fprintf(&b, `<!DOCTYPE html><html><head><meta charset="utf-8"><title>%s</title><style>
*{box-sizing:border-box}
body{margin:0;background:#111217;color:#ccccdc;font-family:"DejaVu Sans",Inter,Helvetica,Arial,sans-serif;width:%dpx;height:%dpx;position:relative;overflow:hidden}
.hdr{position:absolute;left:%dpx;right:%dpx;top:8px}
.hdr h1{font-size:19px;font-weight:500;margin:0 0 8px 0;color:#d8d9da}
.hdr h1 span{color:#8e8e8e;font-weight:400;font-size:14px;margin-left:10px}
.vars{display:flex;gap:8px;flex-wrap:wrap;font-size:12px}
.var{border:1px solid #2c3235;background:#181b1f;border-radius:2px;display:flex}
.var b{background:#22252b;padding:4px 8px;font-weight:500;color:#ccccdc;border-right:1px solid #2c3235}
.var i{padding:4px 8px;font-style:normal;color:#d8d9da}
.note{font-size:11.5px;color:#9fa1a6;margin-top:7px}
.panel{position:absolute;background:#181b1f;border:1px solid #2c3235;border-radius:3px;overflow:hidden}
.pt{font-size:13px;font-weight:500;color:#ccccdc;padding:5px 8px 0 8px;height:24px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.legend{font-size:11px;color:#ccccdc;display:flex;flex-wrap:wrap;gap:1px 12px;padding:0 8px}
.legend span{white-space:nowrap}
.legend i{display:inline-block;width:12px;height:3px;margin-right:5px;vertical-align:middle;border-radius:1px}
svg text{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif}
</style></head><body>`, html.EscapeString(pg.title), pg.width, pg.height(), pagePad, pagePad)
	fmt.Fprintf(&b, `<div class="hdr"><h1>%s<span>%s</span></h1><div class="vars">`, html.EscapeString(pg.title),
		html.EscapeString(pg.times[0].Format("2006-01-02 15:04:05")+" to "+pg.times[len(pg.times)-1].Format("15:04:05 MST")))
	for _, v := range pg.vars {
		name, val, _ := strings.Cut(v, ": ")
		fmt.Fprintf(&b, `<div class="var"><b>%s</b><i>%s</i></div>`, html.EscapeString(name), html.EscapeString(val))
	}
	fmt.Fprintf(&b, `</div><div class="note">%s</div></div>`, html.EscapeString(pg.note))
	for k, p := range pg.panels {
		x := pagePad + int(float64(p.GridPos.X)*(colW+gap))
		y := pagePad + headerH + p.GridPos.Y*(unitH+gap)
		w := int(float64(p.GridPos.W)*colW + float64(p.GridPos.W-1)*gap)
		h := p.GridPos.H*unitH + (p.GridPos.H-1)*gap
		fmt.Fprintf(&b, `<div class="panel" style="left:%dpx;top:%dpx;width:%dpx;height:%dpx"><div class="pt">%s</div>`,
			x, y, w, h, html.EscapeString(p.Title))
		switch p.Type {
		case "stat":
			b.WriteString(pg.stat(p, pg.results[k], w-2, h-26))
		default:
			b.WriteString(pg.timeseries(p, pg.results[k], w-2, h-26))
		}
		b.WriteString(`</div>`)
	}
	b.WriteString(`</body></html>`)
	return b.String()
}

func lastValue(v []float64) float64 {
	for i := len(v) - 1; i >= 0; i-- {
		if !math.IsNaN(v[i]) {
			return v[i]
		}
	}
	return math.NaN()
}

func (pg *page) stat(p *panel, res []series, w, h int) string {
	var vals []float64
	if len(res) > 0 {
		vals = res[0].values
	}
	v := lastValue(vals)
	color := p.thresholdColor(v)
	text := "No data"
	if !math.IsNaN(v) {
		text = formatValue(v, p.FieldConfig.Defaults.Unit, p.FieldConfig.Defaults.Decimals)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">`, w, h)
	// Sparkline (graphMode "area") along the bottom half.
	lo, hi := 0.0, 0.0
	for _, x := range vals {
		if !math.IsNaN(x) {
			hi = math.Max(hi, x)
		}
	}
	if hi > lo && len(vals) > 1 {
		top, bot := float64(h)*0.45, float64(h)
		var pts []string
		first, last := -1, -1
		for i, x := range vals {
			if math.IsNaN(x) {
				continue
			}
			if first < 0 {
				first = i
			}
			last = i
			px := float64(i) / float64(len(vals)-1) * float64(w)
			py := bot - (x-lo)/(hi-lo)*(bot-top)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px, py))
		}
		if first >= 0 {
			fx := float64(first) / float64(len(vals)-1) * float64(w)
			lx := float64(last) / float64(len(vals)-1) * float64(w)
			fmt.Fprintf(&b, `<polygon points="%.1f,%.1f %s %.1f,%.1f" fill="%s" fill-opacity="0.18"/>`, fx, bot, strings.Join(pts, " "), lx, bot, color)
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"/>`, strings.Join(pts, " "), color)
		}
	}
	size := min(40, h/2)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" font-size="%d" font-weight="500" fill="%s">%s</text>`,
		w/2, h/2+size/3-2, size, color, html.EscapeString(text))
	b.WriteString(`</svg>`)
	return b.String()
}

func (pg *page) timeseries(p *panel, res []series, w, h int) string {
	fixed := p.fixedColors()
	// Legend first: its height comes off the plot.
	var leg strings.Builder
	lineW, rows := 0, 1
	for i := range res {
		c, ok := fixed[res[i].legend]
		if !ok {
			c = classicPalette[i%len(classicPalette)]
		}
		res[i].color = c
		iw := 17 + int(6.6*float64(len([]rune(res[i].legend)))) + 12
		if lineW > 0 && lineW+iw > w-16 {
			rows++
			lineW = 0
		}
		lineW += iw
		fmt.Fprintf(&leg, `<span><i style="background:%s"></i>%s</span>`, c, html.EscapeString(res[i].legend))
	}
	legH := rows*15 + 4
	if len(res) == 0 {
		legH = 0
	}
	ph := h - legH
	const left, right, top, bottom = 58, 10, 6, 20
	pw := float64(w - left - right)
	plotH := float64(ph - top - bottom)

	hi := 0.0
	for _, s := range res {
		for _, v := range s.values {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				hi = math.Max(hi, v)
			}
		}
	}
	unit := p.FieldConfig.Defaults.Unit
	factor, suffix := axisUnit(hi, unit)
	step, axisMax := niceAxis(hi / factor)
	dec := 0
	for dec < 6 && math.Abs(step*math.Pow(10, float64(dec))-math.Round(step*math.Pow(10, float64(dec)))) > 1e-6 {
		dec++
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">`, w, ph)
	for k := 0; float64(k)*step <= axisMax*1.0001; k++ {
		v := float64(k) * step
		y := float64(top) + plotH - v/axisMax*plotH
		fmt.Fprintf(&b, `<line x1="%d" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#2c3235" stroke-width="1"/>`, left, float64(left)+pw, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" font-size="10.5" fill="#9fa1a6">%s</text>`, left-6, y+3.5,
			html.EscapeString(num(v, dec)+suffix))
	}
	axisMax *= factor
	t0, t1 := pg.times[0], pg.times[len(pg.times)-1]
	span := t1.Sub(t0).Seconds()
	xOf := func(t time.Time) float64 { return float64(left) + t.Sub(t0).Seconds()/span*pw }
	tickEvery := time.Minute
	for _, d := range []time.Duration{5, 10, 15, 20, 30} {
		if float64(d)*pw/span >= 64 {
			tickEvery = d * time.Second
			break
		}
	}
	for t := t0.Truncate(tickEvery).Add(tickEvery); !t.After(t1); t = t.Add(tickEvery) {
		x := xOf(t)
		if x < float64(left)+26 || x > float64(left)+pw-26 {
			continue // the label would run into the axis labels or off the panel
		}
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%.0f" stroke="#2c3235" stroke-width="1"/>`, x, x, top, float64(top)+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" font-size="10.5" fill="#9fa1a6">%s</text>`, x, float64(top)+plotH+14, t.Format("15:04:05"))
	}
	base := float64(top) + plotH
	for _, s := range res {
		var seg []string
		flush := func() {
			if len(seg) == 0 {
				return
			}
			first := strings.Split(seg[0], ",")[0]
			last := strings.Split(seg[len(seg)-1], ",")[0]
			fmt.Fprintf(&b, `<polygon points="%s,%.1f %s %s,%.1f" fill="%s" fill-opacity="0.10"/>`, first, base, strings.Join(seg, " "), last, base, s.color)
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.6" stroke-linejoin="round"/>`, strings.Join(seg, " "), s.color)
			seg = nil
		}
		for i, v := range s.values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				flush()
				continue
			}
			seg = append(seg, fmt.Sprintf("%.1f,%.1f", xOf(pg.times[i]), base-v/axisMax*plotH))
		}
		flush()
	}
	if len(res) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" font-size="13" fill="#9fa1a6">No data</text>`, w/2, ph/2)
	}
	b.WriteString(`</svg>`)
	if legH > 0 {
		fmt.Fprintf(&b, `<div class="legend">%s</div>`, leg.String())
	}
	return b.String()
}

// niceAxis picks a tick step and a top for values up to hi (the axis
// starts at 0: every panel has min 0).
func niceAxis(hi float64) (step, top float64) {
	if hi <= 0 {
		return 0.25, 1
	}
	raw := hi / 4
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if step = m * mag; step >= raw {
			break
		}
	}
	top = math.Ceil(hi/step-1e-9) * step
	return step, top
}

func trimNum(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

func num(v float64, decimals int) string {
	return trimNum(fmt.Sprintf("%.*f", max(0, decimals), v))
}

// autoDecimals shows about three significant digits.
func autoDecimals(v float64) int {
	a := math.Abs(v)
	switch {
	case a == 0 || a >= 100:
		return 0
	case a >= 10:
		return 1
	case a >= 1:
		return 2
	}
	return int(-math.Floor(math.Log10(a))) + 2
}

// scaled splits v into a mantissa and a unit suffix, Grafana style.
func scaled(v float64, unit string) (float64, string) {
	si := func(v float64, base float64, suffixes []string) (float64, string) {
		i := 0
		for math.Abs(v) >= base && i < len(suffixes)-1 {
			v /= base
			i++
		}
		return v, suffixes[i]
	}
	switch unit {
	case "ops":
		return v, " ops/s"
	case "pps":
		return v, " p/s"
	case "Bps":
		return si(v, 1000, []string{" B/s", " kB/s", " MB/s", " GB/s"})
	case "bytes":
		return si(v, 1024, []string{" B", " KiB", " MiB", " GiB"})
	case "percentunit":
		return v * 100, "%"
	case "s":
		switch a := math.Abs(v); {
		case a == 0:
			return 0, " s"
		case a < 1e-3:
			return v * 1e6, " µs"
		case a < 1:
			return v * 1e3, " ms"
		}
		return v, " s"
	}
	return si(v, 1000, []string{"", " K", " Mil", " Bil"})
}

func formatValue(v float64, unit string, decimals *int) string {
	m, suffix := scaled(v, unit)
	d := autoDecimals(m)
	if decimals != nil {
		d = *decimals
	}
	return num(m, d) + suffix
}

// axisUnit picks one scale for a whole axis whose values go up to hi:
// values are divided by factor and labelled with suffix.
func axisUnit(hi float64, unit string) (factor float64, suffix string) {
	pick := func(base float64, suffixes []string) (float64, string) {
		f, i := 1.0, 0
		for hi/f >= base && i < len(suffixes)-1 {
			f *= base
			i++
		}
		return f, suffixes[i]
	}
	switch unit {
	case "ops":
		return 1, " ops/s"
	case "pps":
		return 1, " p/s"
	case "Bps":
		return pick(1000, []string{" B/s", " kB/s", " MB/s", " GB/s"})
	case "bytes":
		return pick(1024, []string{" B", " KiB", " MiB", " GiB"})
	case "percentunit":
		return 0.01, "%"
	case "s":
		switch {
		case hi < 1e-3:
			return 1e-6, " µs"
		case hi < 1:
			return 1e-3, " ms"
		}
		return 1, " s"
	}
	return pick(1000, []string{"", " K", " Mil", " Bil"})
}
