/* The bundled CLIP BPE merges: assets/bpe_simple_vocab_16e6.txt.gz, embedded at build time
   (EMBEDSERVE_BPE_VOCAB_GZ is its absolute path) and inflated on first use. ELF (Linux) and
   Mach-O (macOS: C symbols take a leading underscore, no .hidden or GNU-stack note). */
#if defined(__APPLE__)
  .const
  .globl _embedserve_bpe_vocab_gz_begin
  .globl _embedserve_bpe_vocab_gz_end
  .private_extern _embedserve_bpe_vocab_gz_begin
  .private_extern _embedserve_bpe_vocab_gz_end
  .p2align 4
_embedserve_bpe_vocab_gz_begin:
  .incbin EMBEDSERVE_BPE_VOCAB_GZ
_embedserve_bpe_vocab_gz_end:
  .byte 0
#else
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
#endif
