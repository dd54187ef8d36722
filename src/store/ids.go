package store

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"regexp"
	"time"
)

var idPattern = regexp.MustCompile(`^[0-9a-f]{24}$`)

// NewID returns a 24-hex id: 4 bytes of Unix time then 8 random bytes, as IronWorker's
// MongoDB-style ids, so that ids sort roughly by creation and index well.
func NewID() string {
	var b [12]byte
	binary.BigEndian.PutUint32(b[:4], uint32(time.Now().Unix()))
	if _, err := rand.Read(b[4:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // the OS RNG does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}

// ValidID tells whether s has the shape of an id.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// NewToken returns a fresh bearer token (40 hex characters, safe in query strings).
func NewToken() string {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// HashToken is what is stored and looked up instead of the token itself.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}
