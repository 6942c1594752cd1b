package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"sort"
	"strings"
)

// The parts of a Grafana dashboard JSON the renderer reads.
type dashboard struct {
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	GridPos     struct {
		X, Y, W, H int
	} `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit       string `json:"unit"`
			Decimals   *int   `json:"decimals"`
			Thresholds struct {
				Steps []struct {
					Color string   `json:"color"`
					Value *float64 `json:"value"`
				} `json:"steps"`
			} `json:"thresholds"`
		} `json:"defaults"`
		Overrides []struct {
			Matcher struct {
				ID      string `json:"id"`
				Options any    `json:"options"`
			} `json:"matcher"`
			Properties []struct {
				ID    string          `json:"id"`
				Value json.RawMessage `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
	Targets []struct {
		RefID        string `json:"refId"`
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
}

func loadDashboard(path string) (*dashboard, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(d.Panels) == 0 {
		return nil, fmt.Errorf("%s: no panels", path)
	}
	return &d, nil
}

// substitute replaces dashboard variables ($name and ${name}) in a query.
func substitute(expr string, vars map[string]string) string {
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	for _, n := range names {
		expr = strings.ReplaceAll(expr, "${"+n+"}", vars[n])
		expr = strings.ReplaceAll(expr, "$"+n, vars[n])
	}
	return expr
}

// fixedColors are the panel's byName color overrides.
func (p *panel) fixedColors() map[string]string {
	out := map[string]string{}
	for _, o := range p.FieldConfig.Overrides {
		name, ok := o.Matcher.Options.(string)
		if o.Matcher.ID != "byName" || !ok {
			continue
		}
		for _, prop := range o.Properties {
			var c struct {
				FixedColor string `json:"fixedColor"`
			}
			if prop.ID == "color" && json.Unmarshal(prop.Value, &c) == nil && c.FixedColor != "" {
				out[name] = grafanaColor(c.FixedColor)
			}
		}
	}
	return out
}

// thresholdColor is the color of the last threshold step at or below v.
func (p *panel) thresholdColor(v float64) string {
	color := "blue"
	for _, s := range p.FieldConfig.Defaults.Thresholds.Steps {
		if s.Value == nil || (!math.IsNaN(v) && v >= *s.Value) {
			color = s.Color
		}
	}
	return grafanaColor(color)
}

// series is one line of a panel: a legend and one value per scrape (NaN
// where the query returned nothing).
type series struct {
	legend string
	color  string
	values []float64
}

var legendVar = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)

// evaluate runs every target of p over the history.
func (p *panel) evaluate(h *history, vars map[string]string) ([]series, error) {
	var out []series
	for _, t := range p.Targets {
		q := substitute(t.Expr, vars)
		n, err := parseQuery(q)
		if err != nil {
			return nil, fmt.Errorf("panel %q, query %s: %w", p.Title, t.Expr, err)
		}
		byLegend := map[string][]float64{}
		for i := range h.times {
			vec, _ := n.eval(h, i)
			for _, e := range vec {
				legend := t.LegendFormat
				if legend == "" {
					legend = e.labels.key()
				}
				legend = legendVar.ReplaceAllStringFunc(legend, func(m string) string {
					return e.labels[legendVar.FindStringSubmatch(m)[1]]
				})
				vals := byLegend[legend]
				if vals == nil {
					vals = make([]float64, len(h.times))
					for j := range vals {
						vals[j] = math.NaN()
					}
					byLegend[legend] = vals
				}
				vals[i] = e.value
			}
		}
		legends := make([]string, 0, len(byLegend))
		for l := range byLegend {
			legends = append(legends, l)
		}
		sort.Strings(legends)
		for _, l := range legends {
			out = append(out, series{legend: l, values: byLegend[l]})
		}
	}
	return out, nil
}

// Grafana's named colors and its classic palette.
var namedColors = map[string]string{
	"green": "#73BF69", "red": "#F2495C", "orange": "#FF9830", "yellow": "#FADE2A",
	"blue": "#5794F2", "purple": "#B877D9", "text": "#CCCCDC",
	"dark-red": "#C4162A", "dark-orange": "#FA6400", "dark-purple": "#8F3BB8", "light-blue": "#8AB8FF", "light-orange": "#FFB357",
}

var classicPalette = []string{"#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9",
	"#705DA0", "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477"}

func grafanaColor(c string) string {
	if v, ok := namedColors[c]; ok {
		return v
	}
	return c
}
