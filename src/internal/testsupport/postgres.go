// Package testsupport is what the integration suites share: a fresh PostgreSQL database
// per suite on the throwaway cluster that scripts/test starts, a sealer with a random
// key, and a live iron-api on a loopback port.
package testsupport

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"time"

	_ "github.com/lib/pq"

	"github.com/ironcf/ironworker-release/src/secrets"
)

// EnvDatabaseURL names the admin URL of the test cluster; scripts/test sets it.
const EnvDatabaseURL = "IRON_TEST_DATABASE_URL"

// Database is a database created for one suite and dropped by Drop.
type Database struct {
	Name     string
	URL      string
	adminURL string
}

// NewDatabase creates an empty database on the test cluster.
func NewDatabase() (*Database, error) {
	admin := os.Getenv(EnvDatabaseURL)
	if admin == "" {
		return nil, fmt.Errorf("%s is not set: run the tests through scripts/test, which starts PostgreSQL", EnvDatabaseURL)
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	name := "iron_test_" + hex.EncodeToString(b[:])
	db, err := sql.Open("postgres", admin)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, fmt.Errorf("create test database: %w", err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		return nil, err
	}
	u.Path = "/" + name
	return &Database{Name: name, URL: u.String(), adminURL: admin}, nil
}

// Drop removes the database, disconnecting whoever is still connected.
func (d *Database) Drop() error {
	db, err := sql.Open("postgres", d.adminURL)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+d.Name+" WITH (FORCE)")
	return err
}

// SQL opens a plain connection to the database, for assertions on what was written.
func (d *Database) SQL() (*sql.DB, error) { return sql.Open("postgres", d.URL) }

// NewSealer returns a sealer with one random key labelled "test".
func NewSealer() *secrets.Sealer {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic(err)
	}
	s, err := secrets.New("test", []secrets.Key{{Label: "test", Secret: key}})
	if err != nil {
		panic(err)
	}
	return s
}
