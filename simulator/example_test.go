package simulator_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/plinth-id/plinth/simulator"
)

// A developer's swtpm: provision once, start a copy, talk to it, stop it.
func ExampleStartSWTPM() {
	dir, err := os.MkdirTemp("", "swtpm-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := simulator.ProvisionSWTPM(filepath.Join(dir, "provisioned"))
	if err != nil {
		log.Fatal(err)
	}
	sw, err := simulator.StartSWTPM(context.Background(), st, dir)
	if err != nil {
		log.Fatal(err)
	}
	defer sw.Stop()
	t, err := sw.Open()
	if err != nil {
		log.Fatal(err)
	}
	defer t.Close()
	info, err := t.Info(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Manufacturer, info.Vendor)
	// Output: IBM SW TPM
}

// The in-process simulator keeps its identity in a state file; its test
// manufacturer CA goes into a dev server's EK CA bundle.
func ExampleOpenInProcess() {
	dir, err := os.MkdirTemp("", "sim-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	stateFile := filepath.Join(dir, "tpm-simulator.json")
	sim, err := simulator.OpenInProcess(stateFile)
	if err != nil {
		log.Fatal(err)
	}
	defer sim.Close()
	ek, err := sim.EK(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	caPEM, err := simulator.ManufacturerCAPEM(stateFile)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("EK certificate in NV %#x, CA PEM: %v\n", uint32(ek.CertIndex), len(caPEM) > 0)
	fmt.Println(sim.ManufacturerCA.Subject.CommonName)
	// Output:
	// EK certificate in NV 0x1c0000a, CA PEM: true
	// Plinth TEST TPM Manufacturer CA (DEV/TEST ONLY)
}
