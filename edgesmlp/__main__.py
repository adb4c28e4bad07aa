from edgesmlp.cli import main

main()
