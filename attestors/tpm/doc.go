// Package tpm is the server half of the tpm node attestor: a node proves
// it holds a genuine TPM (its EK certificate chains to a manufacturer CA,
// or its EK is enrolled), that an attestation key lives in that TPM
// (credential activation), what the TPM measured (a quote over the PCRs
// with a fresh nonce) and that the agent's key lives in it too
// (certification by the AK). The agent's ID is
// spiffe://<td>/spire/agent/tpm/<SHA-256 of the EK public key>. The checks
// are package tpm/verify's; the agent half, which talks to the TPM, is
// tpmagent.
//
// # Measured boot
//
// With ServerConfig.MeasuredBoot the challenge also asks for the TCG event
// log. Once the quote is verified, the log is replayed against it and the
// boot state it proves is evaluated against every policy: each policy that
// passes adds tpm:policy:<name>, and the state adds tpm:secureboot,
// tpm:firmware and tpm:kernel_cmdline_sha256. The required policy must
// pass; otherwise the node is refused, and since the TPM has proved it is
// that node, the refusal is an attestors.Disqualification: the server ends
// the identity the node holds. In audit mode the failure is recorded in the
// evidence instead. The boot state is kept as evidence (EvidenceBootState)
// for `tpm policy learn` and `tpm policy test`.
//
// Every renewal re-attests (the result is MustReattest), and
// MeasuredBoot.ReattestInterval can make that more frequent, so a node whose
// boot leaves policy loses its identity within one interval plus the SVID
// lifetime.
package tpm
