// Package secrets seals data at rest with AES-256-GCM. Each sealed value names the key
// that sealed it, so keys can be rotated: new values use the active key while values
// sealed with an older key stay readable until they are re-sealed.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
)

// format: version byte, label length byte, label, nonce, ciphertext+tag.
const formatV1 = 1

var ErrUnknownKey = errors.New("sealed with a key that is not configured")

type Sealer struct {
	active string
	aeads  map[string]cipher.AEAD
}

// Key is one labelled 32-byte key.
type Key struct {
	Label  string
	Secret []byte
}

// New builds a sealer from keys; active names the key new values are sealed with.
func New(active string, keys []Key) (*Sealer, error) {
	s := &Sealer{active: active, aeads: map[string]cipher.AEAD{}}
	for _, k := range keys {
		if len(k.Label) == 0 || len(k.Label) > 255 {
			return nil, fmt.Errorf("key label %q: must be 1-255 bytes", k.Label)
		}
		block, err := aes.NewCipher(k.Secret)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k.Label, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k.Label, err)
		}
		s.aeads[k.Label] = aead
	}
	if _, ok := s.aeads[active]; !ok {
		return nil, fmt.Errorf("active key %q is not among the configured keys", active)
	}
	return s, nil
}

// FromBase64 builds a sealer from base64-encoded secrets keyed by label.
func FromBase64(active string, labelled map[string]string) (*Sealer, error) {
	var keys []Key
	for label, b64 := range labelled {
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("key %q: not base64: %w", label, err)
		}
		keys = append(keys, Key{Label: label, Secret: raw})
	}
	return New(active, keys)
}

// ActiveKey is the label new values are sealed with.
func (s *Sealer) ActiveKey() string { return s.active }

// Seal encrypts plaintext with the active key. The label is authenticated as
// additional data so a value cannot be moved under another key's name.
func (s *Sealer) Seal(plaintext []byte) ([]byte, error) {
	aead := s.aeads[s.active]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: read nonce: %w", err)
	}
	header := append([]byte{formatV1, byte(len(s.active))}, s.active...)
	out := append(header, nonce...)
	return aead.Seal(out, nonce, plaintext, header), nil
}

// Open decrypts a value sealed by any configured key.
func (s *Sealer) Open(sealed []byte) ([]byte, error) {
	label, err := KeyOf(sealed)
	if err != nil {
		return nil, err
	}
	aead, ok := s.aeads[label]
	if !ok {
		return nil, fmt.Errorf("open: key %q: %w", label, ErrUnknownKey)
	}
	headerLen := 2 + len(label)
	rest := sealed[headerLen:]
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("open: sealed value is truncated")
	}
	nonce, ct := rest[:aead.NonceSize()], rest[aead.NonceSize():]
	plain, err := aead.Open(nil, nonce, ct, sealed[:headerLen])
	if err != nil {
		return nil, fmt.Errorf("open: sealed with key %q: %w", label, err)
	}
	return plain, nil
}

// KeyOf tells which key label sealed a value, without decrypting it.
func KeyOf(sealed []byte) (string, error) {
	if len(sealed) < 2 || sealed[0] != formatV1 {
		return "", errors.New("open: not a sealed value")
	}
	n := int(sealed[1])
	if len(sealed) < 2+n {
		return "", errors.New("open: sealed value is truncated")
	}
	return string(sealed[2 : 2+n]), nil
}
