//! Schema migrations, applied in order at open; `PRAGMA user_version` holds the version.
