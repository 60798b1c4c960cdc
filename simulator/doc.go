// Package simulator provides the hardware and services Plinth trusts, for
// development and tests: TPMs (swtpm as a child process and the in-process
// reference TPM simulator, each with an EK certificate from a private test
// CA, so they behave like real TPMs with manufacturer certificates), a
// private SoftHSM token (StartSoftHSM), and fake cloud metadata services
// (NewAWSIMDS, NewGCPMetadata, NewAzureMetadata) that sign instance
// documents with test keys a server trusts only through explicit
// configuration.
//
// DEV/TEST ONLY. The keys of their CAs sit in plain files, and the in-process
// simulator's seeds come from a number in its state file: anyone who reads
// those files can impersonate these TPMs. Never put their CAs in a production
// server's manufacturer CA bundle.
//
// # swtpm
//
// The same code serves tests, `make demo` and developers. Provision once
// (about a second), then start as many copies as needed (each is ready about
// 10 ms after exec):
//
//	st, err := simulator.ProvisionSWTPM(dir)          // RSA + ECC P-384 EKs, certificates, sha1+sha256 banks
//	sw, err := simulator.StartSWTPM(ctx, st, runDir)   // a copy of the state, on unix sockets
//	defer sw.Stop()
//	t, err := sw.Open()                                // *tpm.TPM; swtpm serves one client at a time
//	// st.CAPEM goes into the server's EK manufacturer CA bundle.
//
// ProvisionSWTPM writes its own swtpm_setup.conf and swtpm-localca.conf
// under dir, so nothing is written to /var/lib/swtpm-localca or the user's
// home. swtpm runs with Pdeathsig SIGKILL: if the process (strictly, the thread
// that started it) dies, swtpm dies too.
//
// # In-process simulator
//
// OpenInProcess runs Microsoft's reference TPM inside the process (go-tpm-tools,
// cgo and libcrypto). It keeps its identity in a state file: the seed, from
// which the EK and the storage root key (and so every key blob) follow, and a
// test manufacturer CA that certifies the ECC P-256 EK. Everything else
// (PCRs, NV) starts empty on every open.
//
//	sim, err := simulator.OpenInProcess(filepath.Join(dataDir, "tpm-simulator.json"))
//	defer sim.Close()
//	ek, err := sim.EK(ctx)                             // sim embeds *tpm.TPM
//	caPEM, err := simulator.ManufacturerCAPEM(stateFile) // for the server's bundle
//
// The simulator is a process-wide singleton: a second OpenInProcess fails
// until the first is closed, so tests that use it must not run in parallel.
//
// # Measured boot
//
// Neither TPM has firmware, so nothing measures a boot into it. BuildBootLog
// writes the crypto-agile event log of a UEFI boot (Secure Boot on or off,
// PK/KEK/db/dbx, authorities, boot applications, GRUB or systemd-boot,
// kernel, initrd, command line), and ExtendEventLog extends any log, a
// synthetic one or a real machine's, into a freshly started TPM so that its
// quotes replay against the log:
//
//	raw := simulator.BuildBootLog(simulator.BootConfig{SecureBoot: true, Loader: "grub", …})
//	err := simulator.ExtendEventLog(ctx, dev, raw)
//
// A log recorded with StartupLocality 3 (H-CRTM platforms) needs a TPM
// started at locality 3: StartSWTPMAt(ctx, state, dir, 3). The in-process
// simulator cannot start there.
package simulator
