/* Functions whose names start with '.' and contain ".cold" (as assembly and
 * stripped or hand-written code has them): ".cold", ".cold.1", "..cold",
 * ".text.cold". Each is a sized STT_FUNC with CFI; the chain at the crash is
 *   .cold (NULL write) <- .cold.1 <- .text.cold <- ..cold <- run <- main
 * Such a name has no parent function to take a `.cold` part's entry state from. */
#define NOIPA __attribute__((noipa))

/* name, callee (empty: fault here) */
#define ASM_FN(name, body)                                   \
    __asm__(".text\n"                                          \
            ".globl \"" name "\"\n"                            \
            ".type \"" name "\", @function\n"                  \
            "\"" name "\":\n"                                  \
            ".cfi_startproc\n"                                 \
            "sub $8, %rsp\n"                                   \
            ".cfi_adjust_cfa_offset 8\n"                       \
            body                                               \
            "add $8, %rsp\n"                                   \
            ".cfi_adjust_cfa_offset -8\n"                      \
            "ret\n"                                            \
            ".cfi_endproc\n"                                   \
            ".size \"" name "\", .-\"" name "\"\n")

ASM_FN(".cold", "xor %eax, %eax\nmovl %edi, (%rax)\n");
ASM_FN(".cold.1", "call \".cold\"\nnop\n");
ASM_FN(".text.cold", "call \".cold.1\"\nnop\n");
ASM_FN("..cold", "call \".text.cold\"\nnop\n");

extern void dotdot_cold(int) __asm__("..cold");

NOIPA int run(int v)
{
    dotdot_cold(v);
    return v + 1;
}

int main(int argc, char **argv)
{
    (void)argv;
    return run(argc) & 0x7f;
}
