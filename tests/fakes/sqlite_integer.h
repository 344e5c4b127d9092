// The value of a one-integer SQLite query (a count, a column of one row)
// on a database file, for the journal's unit tests that look into the
// file jobd writes: opened, asked, closed each time.
//
// Thread-safety: none needed (its own connection per call). Ownership:
// nothing is kept.
#ifndef JOBD_TESTS_FAKES_SQLITE_INTEGER_H_
#define JOBD_TESTS_FAKES_SQLITE_INTEGER_H_

#include <sqlite3.h>

#include <cstdint>
#include <string>

namespace jobd {

// The first column of the first row `sql` returns on the database at
// `path`; -1 if it cannot be opened or asked, or returns no row.
inline int64_t SqliteInteger(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  int64_t n = -1;
  if (sqlite3_open(path.c_str(), &db) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      n = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return n;
}

}  // namespace jobd

#endif  // JOBD_TESTS_FAKES_SQLITE_INTEGER_H_
