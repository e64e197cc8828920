/* The bundled CLIP BPE merges: assets/bpe_simple_vocab_16e6.txt.gz, embedded at build time
   (EMBEDSERVE_BPE_VOCAB_GZ is its absolute path) and inflated on first use. */
  .section .rodata
  .global embedserve_bpe_vocab_gz_begin
  .global embedserve_bpe_vocab_gz_end
  .hidden embedserve_bpe_vocab_gz_begin
  .hidden embedserve_bpe_vocab_gz_end
  .balign 16
embedserve_bpe_vocab_gz_begin:
  .incbin EMBEDSERVE_BPE_VOCAB_GZ
embedserve_bpe_vocab_gz_end:
  .byte 0
  .section .note.GNU-stack,"",%progbits
