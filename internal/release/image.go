package release

// CheckImage returns an error wrapping [ErrInvalid] unless ref is a
// container image pinned by digest, as a container release's
// runtime.image must be: "name@sha256:<64 lowercase hex>". Registries
// check an image with it when it is recorded, long before a release is
// signed.
func CheckImage(ref string) error {
	if pinnedImage.MatchString(ref) {
		return nil
	}
	return wrap(ErrInvalid, "image %q is not pinned by digest: want name@sha256:<64 lowercase hex> (`linkedge toolkit image` prints it)", truncate(ref))
}
