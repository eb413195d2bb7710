#!/usr/bin/env bash
# Makes the bundled example voices. They are SYNTHETIC (espeak-ng), not recordings of a person: good enough to
# try the pipeline end to end, not to clone a natural voice. Needs Debian's espeak-ng and sox.
# Each voice is one folder of clips: 22050 Hz, mono, 16-bit wav (see voices/README.md).
set -euo pipefail
cd "$(dirname "$0")"
make_clip() {  # voice-folder clip-name espeak-voice words-per-minute pitch(0-99, espeak's default 50) text
  mkdir -p "$1"
  espeak-ng -v "$3" -s "$4" -p "$5" -w "$1/.raw.wav" "$6"
  sox -D "$1/.raw.wav" -r 22050 -c 1 -b 16 "$1/$2.wav"
  rm "$1/.raw.wav"
}
# American English, male (espeak-ng's default voice).
make_clip espeak_en clip1 en-us 150 50 "The quick brown fox jumps over the lazy dog, and then it rests in the warm afternoon sun."
# British English, female.
make_clip espeak_en_gb_female clip1 en-gb+f3 155 55 \
  "Would you like a cup of tea before the train leaves? The platform is crowded, so we should hurry along now."
make_clip espeak_en_gb_female clip2 en-gb+f3 150 55 \
  "In the garden, seven yellow roses bloomed beside the old stone wall, and a robin sang quietly all morning."
# American English, male: slower and deeper.
make_clip espeak_en_us_deep clip1 en-us+m3 120 30 \
  "Good evening. Tonight we travel north, across the frozen lake, toward the lighthouse on the hill."
make_clip espeak_en_us_deep clip2 en-us+m3 125 30 \
  "Numbers like forty two and nineteen eighty four sound different when you read them slowly."
