/* Links against an installed ctensor and checks one small computation. */
#include <ctensor/ctensor.h>
#include <stdio.h>

int main(void) {
    ct_scope_begin();
    ct_tensor *a = ct_arange(0, 4, 1, CT_F32, CT_CPU);
    double s = ct_item(ct_sum(ct_mul(a, a), NULL, 0, false)); /* 0 + 1 + 4 + 9 */
    ct_scope_end();
    printf("installed ctensor works: %g\n", s);
    return s == 14.0 ? 0 : 1;
}
