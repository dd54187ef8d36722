package main

// Fast seeding for the scale and schedules workloads: one row is written by the
// product's own path (the API), then copied in one set-based INSERT … SELECT over
// generate_series, every column as the product wrote it except those that must differ
// per row (id, times), which are computed as the product computes them.

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/ironcf/ironworker-release/src/internal/testsupport"
)

// copyRows inserts n copies of table's row id = srcID in one statement. Every column is
// copied from the source row (t) except those in set, each an SQL expression over t,
// s.g (1..n) and s.ts (clock_timestamp() of that copy, increasing over the copies as
// the product's clock_timestamp() is over a batch); args are $3, $4, … of those
// expressions. Columns are read from the catalog, so a column added by a later
// migration is copied too.
func copyRows(ctx context.Context, db *sql.DB, table, srcID string, n int, set map[string]string, args ...any) error {
	if n <= 0 {
		return nil
	}
	rows, err := db.QueryContext(ctx, `SELECT column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 AND is_generated = 'NEVER'
		ORDER BY ordinal_position`, table)
	if err != nil {
		return fmt.Errorf("columns of %s: %w", table, err)
	}
	var cols, exprs []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return err
		}
		cols = append(cols, `"`+c+`"`)
		if e, ok := set[c]; ok {
			exprs = append(exprs, e)
		} else {
			exprs = append(exprs, `t."`+c+`"`)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for c := range set {
		found := false
		for _, k := range cols {
			found = found || k == `"`+c+`"`
		}
		if !found {
			return fmt.Errorf("copy %s: no column %s", table, c)
		}
	}
	query := fmt.Sprintf(`INSERT INTO %s (%s) SELECT %s FROM %s t,
		(SELECT g, clock_timestamp() AS ts FROM generate_series(1, $2::int) g) s WHERE t.id = $1`,
		table, strings.Join(cols, ", "), strings.Join(exprs, ", "), table)
	res, err := db.ExecContext(ctx, query, append([]any{srcID, n}, args...)...)
	if err != nil {
		return fmt.Errorf("copy %d rows of %s: %w", n, table, err)
	}
	if got, _ := res.RowsAffected(); got != int64(n) {
		return fmt.Errorf("copy rows of %s: %d written, %d asked", table, got, n)
	}
	return nil
}

// idExpr is an id of store.NewID's shape (24 hex digits, the Unix time first) for copy
// g: the time of the copy, then g (unique) and random digits.
const idExpr = `lpad(to_hex(extract(epoch FROM s.ts)::bigint), 8, '0') || lpad(to_hex(s.g), 6, '0') || substr(md5(random()::text), 1, 10)`

// seedQueued makes n queued no-op tasks: one through POST /tasks, n-1 copies of it as
// the product's insertTask writes them (created_at = updated_at = clock_timestamp(),
// run_at = created_at + delay).
func seedQueued(ctx context.Context, a *testsupport.API, db *sql.DB, n int) error {
	ids, err := post(a, 1)
	if err != nil {
		return err
	}
	return copyRows(ctx, db, "tasks", ids[0], n-1, map[string]string{
		"id": idExpr, "created_at": "s.ts", "updated_at": "s.ts", "run_at": "s.ts + t.delay * interval '1 second'"})
}
