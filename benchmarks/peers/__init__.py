"""Side-by-side checks of recboard against peer libraries, run in their own environments."""
