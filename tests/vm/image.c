/* image.c: makes sure the VM image exists (vm-images/build-image, cached by input hash), so
 * that the VM tests after it do not spend their time budget building it.  Skips (77) when the
 * image cannot be built on this machine, which makes the other VM tests skip too. */
#include "vm_fixture.h"

#include <sys/stat.h>

static void report(const char *what, const char *path)
{
    struct stat st;

    FX_CHECK(stat(path, &st) == 0, "stat %s", path);
    fx_log("%-10s %s: %.1f MiB apparent, %.1f MiB allocated", what, path,
           (double)st.st_size / (1 << 20), (double)st.st_blocks * 512 / (1 << 20));
}

int main(void)
{
    struct vmf_image img;

    fx_setup("vm-image");
    vmf_image_get(&img, true);
    report("kernel", img.kernel);
    report("initramfs", img.initrd);
    report("rootfs", img.rootfs);
    return 0;
}
