"""The bottom layer every other imports: errors, atomic I/O, validation and typed records."""
