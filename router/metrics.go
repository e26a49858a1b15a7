package router

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	retries     *prometheus.CounterVec
	ringVersion prometheus.Gauge
	ringLoad    prometheus.Gauge
	ringBytes   prometheus.Gauge
}

// Each router has its own registry, so several can run in one process (tests).
func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reshard_router_requests_total", Help: "Requests by operation and HTTP status.",
		}, []string{"op", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "reshard_router_request_seconds", Help: "Request latency by operation and HTTP status.",
			// 0.5 ms to 18 s in steps of 25%: fine enough that a p99 read
			// from it (the adaptive cleanup's, a dashboard's) is within a
			// few percent, where steps of 2x would hide a 25% rise.
			Buckets: prometheus.ExponentialBuckets(0.0005, 1.25, 48),
		}, []string{"op", "code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reshard_router_retries_total", Help: "Attempts retried, by operation and reason (frozen, not_owned, read_only, connect).",
		}, []string{"op", "reason"}),
		ringVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "reshard_router_ring_version", Help: "The ring version the router serves.",
		}),
		ringLoad: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "reshard_router_ring_load_seconds", Help: "How long the last ring version took to read from etcd, decode and apply.",
		}),
		ringBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "reshard_router_ring_stored_bytes", Help: "The stored size of the ring version served: the gzipped ring if stored whole, the JSON of its delta if stored as one.",
		}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.retries, m.ringVersion, m.ringLoad, m.ringBytes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
