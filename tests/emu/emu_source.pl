#!/usr/bin/perl
# ctensor's CUDA emulator (tests/emu/README.md): turns a kernels/cuda/*.cu file into C++ that
# the host compiler builds with tests/emu/cuda_emu.h included first.
#
#   perl emu_source.pl IN.cu OUT.cpp
#
# Every launch `kernel<<<config>>>(args)` becomes
#   ::ct_emu::launcher(__FILE__, __LINE__, [](auto... a) { kernel(a...); }, config)(args)
# so the arguments are evaluated once, at the call, and the kernel's template arguments are
# deduced from them as nvcc deduces them. Each __shared__ declaration is followed by a call
# that gives the variable garbage at a block's start. CUB's headers are left out (cuda_emu.h has the
# one CUB call ctensor makes). Line numbers are kept, and a #line directive names IN.cu, so
# diagnostics and the emulator's messages point at the original source.
use strict;
use warnings;

my ($in, $out) = @ARGV;
die "usage: emu_source.pl IN.cu OUT.cpp\n" unless defined $out;
open(my $fh, '<', $in) or die "emu_source.pl: cannot read $in: $!\n";
my $src = do { local $/; <$fh> };
close $fh;

# Drop CUB's includes, keeping the line.
$src =~ s{^[ \t]*#[ \t]*include[ \t]*<cub/[^>]*>[^\n]*}{}mg;

# Each `__shared__ T name[...];` is followed, on the same line, by a call that fills the
# variable with 0xff bytes when the first thread of a block reaches it: a GPU's shared memory
# holds garbage when a block starts, not what the previous block left there.
die "emu_source.pl: $in: extern __shared__ is not emulated\n" if $src =~ /extern\s+__shared__/;
my $fresh = ($src =~ s{(__shared__\b[^;{}()\n]*?\b([A-Za-z_]\w*)\s*(?:\[[^\]]*\]\s*)*;)}
                      {$1 ::ct_emu::shared_fresh(&$2, sizeof $2);}g);
# A declaration the pattern missed (one that spans lines, a size with parentheses) would
# silently keep the previous block's values: refuse it instead.
my $shared = () = $src =~ /\b__shared__\b/g;
die "emu_source.pl: $in: a __shared__ declaration not on one line as `__shared__ T name[...];`\n"
    if $shared != ($fresh || 0);

my $result = '';
my $pos = 0;
while ((my $at = index($src, '<<<', $pos)) >= 0) {
    my $end = index($src, '>>>', $at);
    die "emu_source.pl: $in: '<<<' without '>>>'\n" if $end < 0;
    # The kernel expression before '<<<': an identifier (with ::) and template arguments,
    # which may nest <> and ().
    my $i = $at - 1;
    $i-- while $i >= $pos && substr($src, $i, 1) =~ /\s/;
    my $name_end = $i + 1;
    if (substr($src, $i, 1) eq '>') {
        my $depth = 0;
        for (; $i >= $pos; $i--) {
            my $c = substr($src, $i, 1);
            if ($c eq '>' || $c eq ')') { $depth++ }
            elsif ($c eq '<' || $c eq '(') { $depth--; last if $depth == 0 }
        }
        die "emu_source.pl: $in: unbalanced template arguments before '<<<'\n" if $i < $pos;
        $i--;
    }
    $i-- while $i >= $pos && substr($src, $i, 1) =~ /[A-Za-z0-9_:]/;
    my $name_start = $i + 1;
    my $name = substr($src, $name_start, $name_end - $name_start);
    die "emu_source.pl: $in: no kernel name before '<<<'\n" unless $name =~ /^[A-Za-z_:]/;
    my $gap = substr($src, $name_end, $at - $name_end);     # whitespace, newlines kept
    my $config = substr($src, $at + 3, $end - $at - 3);
    my $n_lines = () = $name =~ /\n/g;
    $name =~ s/\s*\n\s*/ /g;
    $result .= substr($src, $pos, $name_start - $pos)
        . "::ct_emu::launcher(__FILE__, __LINE__, [](auto... ct_emu_a) { $name(ct_emu_a...); }, "
        . ("\n" x $n_lines) . $gap . $config . ")";
    $pos = $end + 3;
}
$result .= substr($src, $pos);

open(my $oh, '>', $out) or die "emu_source.pl: cannot write $out: $!\n";
print $oh "#line 1 \"$in\"\n", $result;
close $oh or die "emu_source.pl: cannot write $out: $!\n";
