#!/usr/bin/env bash
# Makes the bundled example voices. They are SYNTHETIC (espeak-ng), not recordings of a person: good enough to
# try the pipeline end to end, not to clone a natural voice. Needs Debian's espeak-ng and sox.
set -euo pipefail
cd "$(dirname "$0")"
make_clip() {  # voice-folder espeak-voice words-per-minute text
  mkdir -p "$1"
  espeak-ng -v "$2" -s "$3" -w "$1/.raw.wav" "$4"
  sox -D "$1/.raw.wav" -r 22050 -c 1 -b 16 "$1/clip1.wav"
  rm "$1/.raw.wav"
}
make_clip espeak_en en-us 150 "The quick brown fox jumps over the lazy dog, and then it rests in the warm afternoon sun."
