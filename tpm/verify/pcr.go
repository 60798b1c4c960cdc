package verify

import "github.com/google/go-tpm/tpm2"

// PCRSelection names PCRs by bank: for each hash algorithm (tpm2.TPMAlgSHA1,
// tpm2.TPMAlgSHA256, …) the PCR indexes, 0 to 23. It is what the server asks
// a quote to cover and what VerifyQuote requires the quote to cover exactly.
// The order of the indexes does not matter; duplicates are not allowed.
type PCRSelection map[tpm2.TPMAlgID][]int

// PCRValues holds PCR values by bank and index, as the agent reports them
// next to a quote. VerifyQuote checks that they are exactly the values the
// quote's PCR digest covers, so once it returns nil they can be trusted as
// far as the AK is trusted.
type PCRValues map[tpm2.TPMAlgID]map[int][]byte
