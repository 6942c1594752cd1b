// Package grafana holds no Go code. It owns the Grafana dashboard of the
// gateway's Prometheus metrics (gateway-dashboard.json), what an operator
// deploys; the program that screenshots it from a real run
// (docs/dashboard.png) is a tool, in tools/dashboard-render.
//
// Its test keeps the dashboard honest: every query names only metrics and
// labels the gateway (and the Go and process collectors of its admin
// listener) actually export, every panel uses the datasource variable, the
// panels tile the grid without overlapping, and no query or legend touches
// an identity or endpoint (R9).
package grafana
