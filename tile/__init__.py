"""tilec: a tile-level GPU kernel language. `import tile` re-exports the language and the launch API."""
