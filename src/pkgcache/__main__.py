from pkgcache.cli import main

main()
