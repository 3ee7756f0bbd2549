package console

import (
	"fmt"
	"html"
	"html/template"
	"strings"
)

// series is one colour of a bar chart: a value per bar.
type series struct {
	Name   string
	Class  string // CSS class of its bars (the stylesheet colours them)
	Values []int
}

// barChart draws stacked bars as inline SVG: one bar per label, the series
// stacked in order. Each segment has a <title>, so hovering says what it
// counts. Everything in it is a number or escaped text.
func barChart(labels []string, ss []series, width, height int) template.HTML {
	const left, bottom, top = 36, 18, 6
	n := len(labels)
	if n == 0 {
		return ""
	}
	peak := 0
	for i := 0; i < n; i++ {
		sum := 0
		for _, s := range ss {
			if i < len(s.Values) {
				sum += s.Values[i]
			}
		}
		peak = max(peak, sum)
	}
	plotW, plotH := float64(width-left), float64(height-bottom-top)
	slot := plotW / float64(n)
	barW := max(slot*0.8, 1)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" width="%d" height="%d" role="img" xmlns="http://www.w3.org/2000/svg">`, width, height, width, height)
	fmt.Fprintf(&b, `<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>`, left, height-bottom, width, height-bottom)
	fmt.Fprintf(&b, `<text class="tick" x="%d" y="%d" text-anchor="end">%d</text>`, left-4, top+8, peak)
	fmt.Fprintf(&b, `<text class="tick" x="%d" y="%d" text-anchor="end">0</text>`, left-4, height-bottom)
	step := max(n/6, 1)
	for i := 0; i < n; i++ {
		x := float64(left) + float64(i)*slot
		y := float64(height - bottom)
		for _, s := range ss {
			if i >= len(s.Values) || s.Values[i] == 0 || peak == 0 {
				continue
			}
			h := plotH * float64(s.Values[i]) / float64(peak)
			y -= h
			fmt.Fprintf(&b, `<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s %s: %d</title></rect>`,
				html.EscapeString(s.Class), x, y, barW, h, html.EscapeString(labels[i]), html.EscapeString(s.Name), s.Values[i])
		}
		if i%step == 0 {
			fmt.Fprintf(&b, `<text class="tick" x="%.1f" y="%d">%s</text>`, x, height-4, html.EscapeString(labels[i]))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// legend lists the series of a chart with their colours.
func legend(ss []series) template.HTML {
	var b strings.Builder
	b.WriteString(`<ul class="legend">`)
	for _, s := range ss {
		fmt.Fprintf(&b, `<li><svg width="10" height="10"><rect class="%s" width="10" height="10"/></svg> %s</li>`,
			html.EscapeString(s.Class), html.EscapeString(s.Name))
	}
	b.WriteString(`</ul>`)
	return template.HTML(b.String())
}
