"""HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/): the format recordings are
written in and replayed from. Format only: building entries, decoding bodies, appending to
a file so it stays valid, reading one back."""
