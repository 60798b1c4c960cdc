package gcpiit_test

import (
	"strings"
	"testing"

	"github.com/plinth-id/plinth/attestors/gcpiit"
)

func FuzzDecodePayload(f *testing.F) {
	f.Add([]byte(`{"v":1,"token":"a.b.c"}`))
	f.Add([]byte(`{"v":1,"token":""}`))
	f.Add([]byte(`{"v":0,"token":"a.b.c"} `))
	f.Add([]byte("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := gcpiit.DecodePayload(b)
		if err == nil && (tok == "" && len(strings.TrimSpace(string(b))) > 0 && b[0] == '{') {
			t.Fatalf("DecodePayload(%q) = empty token without an error", b)
		}
	})
}

// FuzzAttest feeds mutated tokens to the server: it must never panic, and
// never accept a token unless it says what the signed one says.
func FuzzAttest(f *testing.F) {
	sim := newSim(f)
	s, _ := newServer(f, sim, func(c *gcpiit.ServerConfig) { c.AllowReattestation = true })
	tok, err := sim.Token(gcpiit.DefaultAudience)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add(tok[:len(tok)-1])
	f.Add(strings.Replace(tok, ".", "..", 1))
	c := sim.Claims("other", now)
	other, _ := sim.SignClaims(c)
	f.Add(other)
	f.Add("e30.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		res, err := s.Attest(t.Context(), payload(t, tok), noChallenge)
		if err == nil && res.AgentID.String() != wantID {
			t.Fatalf("accepted %q as %s", tok, res.AgentID)
		}
	})
}
