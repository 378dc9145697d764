"""The bottom layer every other imports: errors, atomic I/O, validation, typed records, the
run directory's layout and which process of a launch this is."""
