package ca

import "time"

// PrepareTime is when the successor of an authority valid from notBefore to
// notAfter is prepared and published: half way through its life.
func PrepareTime(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) / 2)
}

// ActivateTime is when the successor starts signing: at five sixths of the
// authority's life.
func ActivateTime(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) * 5 / 6)
}
