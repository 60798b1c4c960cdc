// Package e2e tests Plinth end to end: the real plinth-server and
// plinth-agent binaries, started as child processes on loopback and private
// unix sockets by package harness, with go-spiffe v2 as the workload
// client.
//
// TestMain builds both binaries and a small second workload
// (testdata/workload) once into a temporary directory. Each test then
// starts what it needs:
//
//	s := harness.StartServer(t, bin.dir)               // plinth-server run, healthy
//	s.CreateEntry(t, testID, selfSelectors(t)...)      // plinth-server entry create
//	a := s.StartAgent(t, 5*time.Second)                // join token, plinth-agent run, healthy
//	a.WaitSVIDs(t, testID)                             // the agent has synced
//	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(a.Addr()))
//
// Every process gets SIGTERM (and is waited for) in t.Cleanup, and its
// output is logged when the test fails. The test process is one workload:
// entries select it by uid and by the path of the test binary; the helper
// binary is the other, with its own path and SPIFFE ID.
//
// Run with: go test ./test/e2e/
package e2e
