"""A stand-in for `osbake boot IMAGE --firmware F [--datasource D] [--hardware H] --expect
TEXT...`: passes unless the image's name contains 'noboot'; says what it was asked."""

import sys

image = sys.argv[1]
print(f"booting {image} with {sys.argv[sys.argv.index('--firmware') + 1]}")
print("boot options: " + " ".join(sys.argv[sys.argv.index("--firmware") + 2 :]))
if "noboot" in image:
    print("no login prompt within 60 s")
    sys.exit(1)
print("login: prompt seen")
