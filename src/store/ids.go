package store

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"regexp"
	"sync/atomic"
	"time"
)

var idPattern = regexp.MustCompile(`^[0-9a-f]{24}$`)

// NewID returns a 24-hex id laid out as a MongoDB ObjectId (IronWorker's ids are
// ObjectIds): 4 bytes of Unix time, 5 bytes drawn once per process, a 3-byte counter.
// The ids of one process increase, so a batch of tasks appends to the primary key's
// rightmost pages instead of scattering over the last second's: about a quarter of an
// insert's cost in scripts/bench. Ids are not secrets (access is checked by project);
// what must not be guessed uses NewToken, or newLeaseID.
func NewID() string {
	var b [12]byte
	binary.BigEndian.PutUint32(b[:4], uint32(time.Now().Unix()))
	copy(b[4:9], idProcess[:])
	c := idCounter.Add(1)
	b[9], b[10], b[11] = byte(c>>16), byte(c>>8), byte(c)
	return hex.EncodeToString(b[:])
}

var (
	idProcess [5]byte
	idCounter atomic.Uint32
)

func init() {
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	copy(idProcess[:], seed[:5])
	idCounter.Store(uint32(seed[5])<<16 | uint32(seed[6])<<8 | uint32(seed[7]))
}

// newLeaseID returns an id of the same shape with 8 random bytes after the time: a lease
// id is what a runner shows to prove it holds a task, so it is not derived from others.
func newLeaseID() string {
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
