package simulator_test

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/plinth-id/plinth/simulator"
)

const azureTenant = "8a0c4f2e-3b5d-4e6f-9a1b-2c3d4e5f6a7b"

var azureIdentity = simulator.AzureIdentity{
	TenantID: azureTenant, PrincipalID: "1f2e3d4c-5b6a-4789-8abc-def012345678",
	SubscriptionID: "6d5c4b3a-2918-4706-a5b4-c3d2e1f0a9b8", ResourceGroup: "plinth-rg", VMName: "node-1",
}

func newAzure(t *testing.T, id simulator.AzureIdentity) *simulator.AzureMetadata {
	t.Helper()
	m, err := simulator.NewAzureMetadata(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func TestAzureMetadataServesTokens(t *testing.T) {
	m := newAzure(t, azureIdentity)
	iat := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	m.SetClock(func() time.Time { return iat })
	code, body, _ := metadataGet(t, m.URL()+"/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/", "Metadata", "true")
	if code != 200 {
		t.Fatalf("token: %d %s", code, body)
	}
	var r map[string]string
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	if r["token_type"] != "Bearer" || r["resource"] != "https://management.azure.com/" || r["not_before"] != strconv.FormatInt(iat.Unix(), 10) {
		t.Errorf("response = %v", r)
	}
	c := verifyJWT(t, r["access_token"], m.KeysURL())
	want := map[string]any{
		"aud":       "https://management.azure.com/",
		"iss":       "https://sts.windows.net/" + azureTenant + "/",
		"tid":       azureTenant,
		"sub":       azureIdentity.PrincipalID,
		"oid":       azureIdentity.PrincipalID,
		"idtyp":     "app",
		"appid":     r["client_id"],
		"nbf":       float64(iat.Unix()),
		"xms_mirid": "/subscriptions/6d5c4b3a-2918-4706-a5b4-c3d2e1f0a9b8/resourcegroups/plinth-rg/providers/Microsoft.Compute/virtualMachines/node-1",
	}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("claim %s = %v, want %v", k, c[k], v)
		}
	}
	// The keys are published as Microsoft's: certificate, thumbprint, issuer.
	var raw struct{ Keys []map[string]any }
	if err := json.Unmarshal(m.JWKS(), &raw); err != nil || len(raw.Keys) != 1 {
		t.Fatalf("JWKS %s: %v", m.JWKS(), err)
	}
	k := raw.Keys[0]
	if k["x5t"] != m.KeyID() || k["kid"] != m.KeyID() || k["x5c"] == nil || k["issuer"] != "https://login.microsoftonline.com/"+azureTenant+"/v2.0" {
		t.Errorf("key = %v", k)
	}
}

func TestAzureMetadataRefusesLikeIMDS(t *testing.T) {
	m := newAzure(t, azureIdentity)
	tests := []struct {
		name, url string
		header    []string
		code      int
		body      string
	}{
		{"no Metadata header", "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r", nil, 400,
			`{"error":"invalid_request","error_description":"Required metadata header not specified"}` + "\n"},
		{"no api-version", "/metadata/identity/oauth2/token?resource=r", []string{"Metadata", "true"}, 400,
			`{"error":"invalid_request","error_description":"Required query variable 'api-version' is missing"}` + "\n"},
		{"no resource", "/metadata/identity/oauth2/token?api-version=2018-02-01", []string{"Metadata", "true"}, 400,
			`{"error":"invalid_request","error_description":"Required audience parameter not specified"}` + "\n"},
		{"keys of another tenant", "/0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e/discovery/v2.0/keys", nil, 400,
			`{"error":"invalid_tenant","error_description":"AADSTS90002: Tenant not found."}`},
	}
	for _, tt := range tests {
		if code, body, _ := metadataGet(t, m.URL()+tt.url, tt.header...); code != tt.code || body != tt.body {
			t.Errorf("%s: %d %q, want %d %q", tt.name, code, body, tt.code, tt.body)
		}
	}
}

func TestAzureMetadataFaults(t *testing.T) {
	m := newAzure(t, azureIdentity)
	url := m.URL() + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r"
	m.Fail(1)
	for i, want := range []int{500, 200} {
		if code, _, _ := metadataGet(t, url, "Metadata", "true"); code != want {
			t.Errorf("request %d: %d, want %d", i, code, want)
		}
	}
	m.Garbage()
	if code, body, _ := metadataGet(t, url, "Metadata", "true"); code != 200 || json.Valid([]byte(body)) {
		t.Errorf("garbage: %d %q", code, body)
	}
	if token, jwks := m.Requests(); token != 3 || jwks != 0 {
		t.Errorf("Requests = %d, %d", token, jwks)
	}
}

func TestAzureMetadataUserAssignedIdentity(t *testing.T) {
	id := simulator.AzureIdentity{TenantID: azureTenant, PrincipalID: "p", MIRID: "/subscriptions/s/resourcegroups/ids/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agents"}
	m := newAzure(t, id)
	if c := m.Claims("r", time.Now()); c["xms_mirid"] != id.MIRID {
		t.Errorf("xms_mirid = %v", c["xms_mirid"])
	}
	if _, err := simulator.NewAzureMetadata(simulator.AzureIdentity{TenantID: azureTenant, PrincipalID: "p"}); err == nil ||
		err.Error() != "simulator: an Azure identity needs a subscription, a resource group and a VM name, or an explicit MIRID" {
		t.Errorf("NewAzureMetadata = %v", err)
	}
}
