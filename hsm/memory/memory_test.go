package memory_test

import (
	"context"
	"errors"
	"testing"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/hsmtest"
	"github.com/plinth-id/plinth/hsm/memory"
)

func TestContract(t *testing.T) {
	hsmtest.Run(t, func(t *testing.T) hsm.KeyManager { return memory.New() }, nil)
}

func TestZeroManager(t *testing.T) {
	ctx := t.Context()
	var m memory.Manager
	if keys, err := m.ListKeys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("ListKeys: got %d keys, error %v; want none", len(keys), err)
	}
	if _, err := m.GetKey(ctx, "x509-ca-A"); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("GetKey: got error %v, want hsm.ErrNotFound", err)
	}
	if _, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if _, err := m.GetKey(ctx, "x509-ca-A"); err != nil {
		t.Fatalf("GetKey: %v", err)
	}
}

func TestErrors(t *testing.T) {
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		id   string
		typ  hsm.KeyType
		want string
	}{
		{"empty id", t.Context(), "", hsm.ECP256, "memory: key id is empty"},
		{"unknown type", t.Context(), "x509-ca-A", "ec-p521", `memory: could not generate key "x509-ca-A": hsm: unknown key type "ec-p521" (want ec-p256, ec-p384, rsa-2048 or rsa-4096)`},
		{"canceled", canceled, "x509-ca-A", hsm.ECP256, `memory: could not generate key "x509-ca-A": context canceled`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := memory.New().GenerateKey(tt.ctx, tt.id, tt.typ)
			if err == nil || err.Error() != tt.want {
				t.Errorf("GenerateKey: got error %v, want %s", err, tt.want)
			}
		})
	}

	m := memory.New()
	const notFound = `memory: key "x509-ca-A": hsm: key not found`
	if _, err := m.GetKey(t.Context(), "x509-ca-A"); err == nil || err.Error() != notFound {
		t.Errorf("GetKey: got error %v, want %s", err, notFound)
	}
	if err := m.DeleteKey(t.Context(), "x509-ca-A"); err == nil || err.Error() != notFound {
		t.Errorf("DeleteKey: got error %v, want %s", err, notFound)
	}
}
