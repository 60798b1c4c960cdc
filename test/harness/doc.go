// Package harness runs the real plinth-server and plinth-agent binaries as
// child processes, for end-to-end tests and benchmarks. It takes a
// testing.TB, so *testing.T and *testing.B both work.
//
// Build the binaries once, in TestMain, then start what a test needs:
//
//	harness.Build(dir)                                   // in TestMain
//
//	s := harness.StartServer(t, dir)                     // plinth-server run, healthy
//	s.CreateEntry(t, id, "unix:uid:1000")                // plinth-server entry create
//	a := s.StartAgent(t, 5*time.Second)                  // join token, plinth-agent run, healthy
//	a.WaitSVIDs(t, id)                                   // the agent has attested and synced
//	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(a.Addr()))
//
// Each server and agent gets its own short temporary directory (unix socket
// paths must stay under 108 bytes), free loopback ports and a health_checks
// listener, which serves Process.Heap. Every join token the harness
// generates registers NodeID as an alias of the agent that redeems it, and
// CreateEntry parents entries to NodeID, so an entry reaches every agent of
// the server.
//
// Servers and agents can be stopped and started again on the same
// configuration and data (Process.MustStop, then Server.StartReady or
// Agent.StartReady). Every process gets SIGTERM, and is waited for, at
// cleanup; the test fails if it does not then exit with status 0, and the
// output of every process is logged when the test fails. The harness never
// signals a process it did not start.
package harness
