package datastore

import (
	"fmt"
	"testing"

	"github.com/plinth-id/plinth/attestors"
)

// benchEntry returns a realistic entry: a workload under a node, with a few
// selectors and DNS names, unique by i.
func benchEntry(i int) *Entry {
	return &Entry{
		SPIFFEID: fmt.Sprintf("spiffe://example.org/ns/prod/sa/service-%d", i),
		ParentID: fmt.Sprintf("spiffe://example.org/spire/agent/tpm/%064x", i%100),
		Selectors: []attestors.Selector{
			{Type: "k8s", Value: "ns:prod"},
			{Type: "k8s", Value: fmt.Sprintf("sa:service-%d", i)},
			{Type: "unix", Value: fmt.Sprintf("uid:%d", 1000+i%50)},
		},
		X509SVIDTTL: 3600,
		DNSNames:    []string{fmt.Sprintf("service-%d.prod.svc", i)},
	}
}

// prefill stores n entries numbered from 0, in batches.
func prefill(b *testing.B, s *Store, n int) {
	b.Helper()
	const batch = 1000
	for start := 0; start < n; start += batch {
		es := make([]*Entry, 0, batch)
		for i := start; i < min(start+batch, n); i++ {
			es = append(es, benchEntry(i))
		}
		_, errs := s.CreateEntries(b.Context(), es)
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkCreateEntry measures single CreateEntry calls, each its own
// transaction, into a store that already holds 10,000 entries (and, to show
// the rate stays flat, 0 and 50,000).
func BenchmarkCreateEntry(b *testing.B) {
	for _, n := range []int{0, 10_000, 50_000} {
		b.Run(fmt.Sprintf("prefilled=%d", n), func(b *testing.B) {
			s, _, _ := openTest(b)
			prefill(b, s, n)
			i := n
			for b.Loop() {
				if _, err := s.CreateEntry(b.Context(), benchEntry(i)); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(i-n)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
