//! Archiving dead letters from the queue into Postgres (filled in with the DLQ issue).
